"""Development tools that gate or check the build, not benchmarks: the static SASS report and its
gate (tools/sass, `make sass-report` / `make sass-check`) and the GPU check (tools/gpu_check.py,
`make gpu-check`)."""
