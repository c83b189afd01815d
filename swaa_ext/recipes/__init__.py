"""SWAA recipes: long-context evaluation (`python -m swaa_ext.recipes.eval`) of SWAA configurations."""
