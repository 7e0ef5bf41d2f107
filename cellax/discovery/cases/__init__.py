"""Case studies on data cellax generates: thermal ODEs, particle diffusion, equivalent circuit,
the SPMe's missing physics against the DFN."""
