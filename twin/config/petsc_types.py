"""PETSc type names as petsc4py lists them, for validating ``solver:`` options without importing PETSc
(:mod:`twin.config.solver_options`). Written by ``python -m twin.config.solver_options``; do not edit.
"""

PETSC4PY_VERSION = "3.18.5"

TYPES: dict[str, tuple[str, ...]] = {
    "KSP.Type": (
        "bcgs", "bcgsl", "bicg", "cg", "cgls", "cgne", "cgs", "chebyshev", "cr", "dgmres", "fbcgs", "fbcgsr", "fcg",
        "fetidp", "fgmres", "gcr", "gltr", "gmres", "groppcg", "hpddm", "ibcgs", "lcd", "lgmres", "lsqr", "minres",
        "nash", "none", "pgmres", "pipebcgs", "pipecg", "pipecg2", "pipecgrr", "pipecr", "pipefcg", "pipefgmres",
        "pipegcr", "pipelcg", "pipeprcg", "preonly", "python", "qcg", "qmrcgs", "richardson", "stcg", "symmlq",
        "tcqmr", "tfqmr", "tsirm",
    ),
    "Mat.OrderingType": (
        "1wd", "amd", "metisnd", "natural", "nd", "qmd", "rcm", "rowlength", "spectral", "wbm",
    ),
    "Mat.SolverType": (
        "bas", "cholmod", "cuda", "cusparse", "elemental", "essl", "klu", "lusol", "matlab", "mkl_cpardiso",
        "mkl_pardiso", "mumps", "pastix", "petsc", "scalapack", "sparseelemental", "spqr", "strumpack", "superlu",
        "superlu_dist", "umfpack",
    ),
    "Mat.Type": (
        "aij", "aijcrl", "aijcusparse", "aijmkl", "aijperm", "aijsell", "aijviennacl", "baij", "baijmkl",
        "blockmat", "composite", "constantdiagonal", "dense", "densecuda", "dummy", "elemental", "fft", "fftw",
        "h2opus", "hermitiantranspose", "hypre", "hypresstruct", "hyprestruct", "is", "kaij", "lmvm",
        "lmvmbadbroyden", "lmvmbfgs", "lmvmbroyden", "lmvmdfp", "lmvmdiagbroyden", "lmvmsr1", "lmvmsymbadbroyden",
        "lmvmsymbroyden", "localref", "lrc", "maij", "mffd", "mpiadj", "mpiaij", "mpiaijcrl", "mpiaijcusparse",
        "mpiaijmkl", "mpiaijperm", "mpiaijsell", "mpiaijviennacl", "mpibaij", "mpibaijmkl", "mpidense",
        "mpidensecuda", "mpikaij", "mpimaij", "mpisbaij", "mpisell", "nest", "normal", "normalh", "preallocator",
        "python", "same", "sbaij", "scatter", "schurcomplement", "sell", "seqaij", "seqaijcrl", "seqaijcusparse",
        "seqaijmkl", "seqaijperm", "seqaijsell", "seqaijviennacl", "seqbaij", "seqbaijmkl", "seqcufft", "seqdense",
        "seqdensecuda", "seqkaij", "seqmaij", "seqsbaij", "seqsell", "shell", "submatrix", "transpose",
    ),
    "PC.GAMGType": (
        "agg", "classical", "geo",
    ),
    "PC.Type": (
        "asm", "bddc", "bfbt", "bjacobi", "cholesky", "chowiluviennacl", "composite", "cp", "deflation",
        "eisenstat", "exotic", "fieldsplit", "galerkin", "gamg", "gasm", "h2opus", "hmg", "hpddm", "hypre", "icc",
        "ilu", "jacobi", "kaczmarz", "ksp", "lmvm", "lsc", "lu", "mat", "mg", "ml", "nn", "none", "parms", "patch",
        "pbjacobi", "pfmg", "python", "qr", "redistribute", "redundant", "rowscalingviennacl", "saviennacl",
        "shell", "sor", "spai", "svd", "syspfmg", "telescope", "tfs", "vpbjacobi",
    ),
    "SNES.Type": (
        "anderson", "aspin", "composite", "fas", "ksponly", "ksptransposeonly", "ms", "nasm", "ncg", "newtonls",
        "newtontr", "ngmres", "ngs", "nrichardson", "patch", "python", "qn", "shell", "vinewtonrsls",
        "vinewtonssls",
    ),
    "TAO.Type": (
        "admm", "almm", "asfls", "asils", "blmvm", "bmrm", "bncg", "bnls", "bntl", "bntr", "bqnkls", "bqnktl",
        "bqnktr", "bqnls", "bqpip", "brgn", "cg", "gpcg", "ipm", "lcl", "lmvm", "nls", "nm", "ntl", "ntr", "owlqn",
        "pdipm", "pounders", "python", "shell", "ssfls", "ssils", "tron",
    ),
    "TS.ARKIMEXType": (
        "1bee", "2c", "2d", "2e", "3", "4", "5", "a2", "ars122", "ars443", "bpr3", "l2", "prssp2",
    ),
    "TS.RKType": (
        "1fe", "2a", "2b", "3", "3bs", "4", "5bs", "5dp", "5f", "6vr", "7vr", "8vr",
    ),
    "TS.Type": (
        "alpha", "alpha2", "arkimex", "basicsymplectic", "bdf", "beuler", "cn", "discgrad", "eimex", "euler",
        "glee", "glle", "mimex", "mprk", "pseudo", "python", "radau5", "rk", "rosw", "ssp", "sundials", "theta",
    ),
    "Vec.Type": (
        "cuda", "hip", "kokkos", "mpi", "mpicuda", "mpihip", "mpikokkos", "mpiviennacl", "nest", "seq", "seqcuda",
        "seqhip", "seqkokkos", "seqviennacl", "shared", "standard", "viennacl",
    ),
}
