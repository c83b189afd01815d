"""Static performance report of the CUDA kernels from their SASS (`make sass-report`).

No GPU is needed and none is measured: every figure comes from nvcc/ptxas output and the SASS
disassembly, plus a stated machine model (machines.py). One job per file:

    build.py      instantiations, nvcc flags (as setup.py), cubins, ptxas -v, traits values
    sass.py       nvdisasm text -> functions -> instructions (with inlined line info)
    loops.py      the hot key loop (back-edges) and its counts, unmasked / masked path
    machines.py   A100 / H100 limits and rates (the assumptions)
    model.py      occupancy, bytes per FLOP, utilisation bounds
    report.py     table, JSON, Markdown; the regression check
"""
