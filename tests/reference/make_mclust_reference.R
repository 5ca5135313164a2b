# Reference numbers from R mclust for the gaussmix test-suite.
#
# Run from the repository root, after export_sklearn_data.py:
#
#   python tests/reference/export_sklearn_data.py
#   Rscript tests/reference/make_mclust_reference.R
#
# 1. Exports R's own data sets (faithful, mclust::diabetes, mclust::thyroid,
#    mclust::banknote; class columns dropped) to tests/reference/data/*.csv.
# 2. Reads all seven CSVs back (so R works on exactly the doubles Python reads)
#    and writes tests/reference/mclust_reference.json with, per data set, the
#    default model-based hierarchical clustering, every (model, G) EM cell that
#    Mclust computes for VII/EEE/VVI/VVV and G = 1..9, Mclust's own BIC table
#    as a cross-check, and timings.
#
# All doubles in the JSON are written with "%.17g" (exact round trip under a
# correctly rounding parser such as Python's float()).  R's own string->double
# parser is NOT correctly rounding for some 16-digit inputs, so the CSVs use
# "%.15g" only where R reads it back to the same double, "%.17g" otherwise;
# check_csv_roundtrip.py confirms that R and Python read identical doubles.

suppressPackageStartupMessages({
  library(mclust)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = FALSE)
script <- sub("^--file=", "", args[grep("^--file=", args)])
ref_dir <- if (length(script) == 1) dirname(normalizePath(script)) else "tests/reference"
data_dir <- file.path(ref_dir, "data")
dir.create(data_dir, showWarnings = FALSE, recursive = TRUE)
source(file.path(ref_dir, "common.R"))

MODELS <- c("VII", "EEE", "VVI", "VVV")
GS <- 1:9
# Runs per timing (median reported); override with MCLUST_REF_TIMING_RUNS.
N_TIMING <- as.integer(Sys.getenv("MCLUST_REF_TIMING_RUNS", "5"))
# Wall-clock cap (seconds) for all runs of one timing; override with
# MCLUST_REF_TIMING_CAP_S.  Runs finished within the cap are kept.
TIMING_CAP_S <- as.integer(Sys.getenv("MCLUST_REF_TIMING_CAP_S", "900"))

# ---------------------------------------------------------------- CSV export --

fmt_csv <- function(x) {
  s <- sprintf("%.15g", x)
  bad <- as.numeric(s) != x
  s[bad] <- sprintf("%.17g", x[bad])
  stopifnot(all(as.numeric(s) == x))
  s
}

write_exact_csv <- function(df, path) {
  X <- as.matrix(df)
  storage.mode(X) <- "double"
  cols <- lapply(seq_len(ncol(X)), function(j) fmt_csv(X[, j]))
  lines <- do.call(paste, c(cols, sep = ","))
  writeLines(c(paste(colnames(X), collapse = ","), lines), path)
  back <- read_data(path)
  stopifnot(identical(unname(back), unname(X)))
  cat(sprintf("wrote %s (%dx%d)\n", path, nrow(X), ncol(X)))
}


data("diabetes", package = "mclust", envir = environment())
data("thyroid", package = "mclust", envir = environment())
data("banknote", package = "mclust", envir = environment())

write_exact_csv(datasets::faithful, file.path(data_dir, "faithful.csv"))
write_exact_csv(diabetes[, setdiff(names(diabetes), "class")],
                file.path(data_dir, "diabetes.csv"))
write_exact_csv(thyroid[, setdiff(names(thyroid), "Diagnosis")],
                file.path(data_dir, "thyroid.csv"))
write_exact_csv(banknote[, setdiff(names(banknote), "Status")],
                file.path(data_dir, "banknote.csv"))

DATASETS <- list(
  iris = "sklearn.datasets.load_iris (features)",
  wine = "sklearn.datasets.load_wine (features)",
  breast_cancer = "sklearn.datasets.load_breast_cancer (features)",
  faithful = "R datasets::faithful",
  diabetes = "R mclust::diabetes without 'class'",
  thyroid = "R mclust::thyroid without 'Diagnosis'",
  banknote = "R mclust::banknote without 'Status'"
)


num_or_null <- function(v) if (is.null(v) || length(v) == 0 || !is.finite(v)) NULL else as.numeric(v)

# ------------------------------------------------------------------ helpers --

# Each timing runs in a child Rscript under `timeout`, because some default
# models (EVE/VVE/EVV with their inner M-step iterations) can run for a very
# long time on higher-dimensional data and cannot be interrupted from R while
# inside mclust's Fortran code.  The child appends one elapsed time per line
# (system.time()[["elapsed"]], so R start-up is not counted); the median over
# the runs that completed within the cap is reported.
TIMING_CHILD <- '
suppressPackageStartupMessages(library(mclust))
a <- commandArgs(trailingOnly = TRUE)
X <- as.matrix(read.csv(a[1], colClasses = "numeric", check.names = FALSE))
storage.mode(X) <- "double"
what <- a[2]; n <- as.integer(a[3]); out <- a[4]
f <- switch(what,
  mclust_4_models = function() Mclust(X, G = 1:9, modelNames = c("VII", "EEE", "VVI", "VVV"), verbose = FALSE),
  mclust_14_models = function() Mclust(X, G = 1:9, verbose = FALSE),
  hc_VVV_SVD = function() hc(X, modelName = mclust.options("hcModelName"), use = mclust.options("hcUse")),
  hc_default_args = function() hc(X))
for (i in seq_len(n)) cat(system.time(f())[["elapsed"]], "\n", file = out, append = TRUE)
'

time_child <- function(csv, what, n = N_TIMING, cap = TIMING_CAP_S) {
  if (n < 1) return(list(median_s = NULL, runs_s = list(), timed_out = FALSE))
  out <- tempfile(); src <- tempfile(fileext = ".R")
  writeLines(TIMING_CHILD, src)
  rscript <- file.path(R.home("bin"), "Rscript")
  status <- system2("timeout", c("-k", "10", as.character(cap), rscript, "--vanilla", src,
                                 shQuote(csv), what, n, out))
  t <- if (file.exists(out)) as.numeric(readLines(out)) else numeric(0)
  unlink(c(out, src))
  list(median_s = if (length(t)) median(t) else NULL, runs_s = I(t),
       timed_out = identical(as.integer(status), 124L), cap_s = cap)
}

run_cell <- function(X, h, model, G) {
  n <- nrow(X); d <- ncol(X)
  warns <- character(0)
  fit <- tryCatch(
    withCallingHandlers({
      if (G == 1) {
        mvn(modelName = model, data = X)
      } else {
        z <- unmap(hclass(h, G), groups = 1:G)
        me(modelName = model, data = X, z = z, control = emControl(), warn = TRUE)
      }
    }, warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    }),
    error = function(e) e)
  npar <- nMclustParams(model, d, G)
  if (inherits(fit, "error")) {
    return(list(G = G, loglik = NULL, bic = NULL, npar = npar, n_iter = NULL,
                rel_error = NULL, returnCode = NULL, warning = NULL,
                error = conditionMessage(fit)))
  }
  info <- attr(fit, "info")
  ll <- fit$loglik
  list(
    G = G,
    loglik = num_or_null(ll),
    bic = num_or_null(if (is.na(ll)) NA else bic(model, ll, n, d, G)),
    npar = npar,
    n_iter = if (G == 1 || is.null(info)) NULL else as.integer(abs(info[["iterations"]])),
    rel_error = if (G == 1 || is.null(info)) NULL else num_or_null(info[["error"]]),
    returnCode = as.integer(attr(fit, "returnCode")),
    warning = if (!is.null(attr(fit, "WARNING"))) attr(fit, "WARNING")
              else if (length(warns)) paste(unique(warns), collapse = "; ") else NULL,
    error = NULL
  )
}

# ---------------------------------------------------------------- main loop --

out_sets <- list()
for (name in names(DATASETS)) {
  message("== ", name, "  ", format(Sys.time(), "%H:%M:%S"))
  path <- file.path(data_dir, paste0(name, ".csv"))
  X <- read_data(path)
  n <- nrow(X); d <- ncol(X)

  dup <- which(duplicated(X))
  first_of <- vapply(dup, function(i)
    which(apply(X[seq_len(i - 1), , drop = FALSE], 1, function(r) all(r == X[i, ])))[1], 0L)

  # Default hierarchical clustering, as in mclustBIC (n > d in all sets here).
  hcm <- mclust.options("hcModelName"); hcu <- mclust.options("hcUse")
  h <- hc(X, modelName = hcm, use = hcu)
  pairs <- t(unclass(h)[, , drop = FALSE]); storage.mode(pairs) <- "integer"
  ip <- attr(h, "initialPartition")
  cls <- hclass(h, GS)
  classes <- setNames(lapply(GS, function(g) I(as.integer(cls[, as.character(g)]))),
                      as.character(GS))

  cells <- list()
  for (m in MODELS) cells[[m]] <- lapply(GS, function(g) run_cell(X, h, m, g))

  # Cross-check against Mclust itself.
  mc <- Mclust(X, G = GS, modelNames = MODELS, verbose = FALSE)
  B <- mc$BIC
  mclust_bic <- setNames(lapply(MODELS, function(m) I(as.numeric(B[as.character(GS), m]))), MODELS)
  RC <- attr(B, "returnCodes")
  mclust_rc <- setNames(lapply(MODELS, function(m) I(as.integer(RC[as.character(GS), m]))), MODELS)
  mine <- sapply(MODELS, function(m) vapply(cells[[m]], function(cl)
    if (is.null(cl$bic)) NA_real_ else cl$bic, 0))
  theirs <- unclass(B)[as.character(GS), MODELS]; attributes(theirs) <- attributes(mine)
  same_na <- identical(is.na(mine), is.na(theirs))
  diff <- max(c(0, abs(mine - theirs)), na.rm = TRUE)
  if (!same_na || diff != 0)
    message(sprintf("  !! cell BICs differ from mclustBIC: max |diff| = %g, same NA = %s", diff, same_na))

  best <- list(model = mc$modelName, G = mc$G, bic = mc$bic, loglik = mc$loglik,
               npar = nMclustParams(mc$modelName, d, mc$G),
               top3 = I(names(pickBIC(B, 3))), top3_bic = I(as.numeric(pickBIC(B, 3))))

  # Timings.
  message("  cells done, timing ...")
  t4 <- time_child(path, "mclust_4_models")
  t14 <- time_child(path, "mclust_14_models")
  thc <- time_child(path, "hc_VVV_SVD")
  thc0 <- time_child(path, "hc_default_args")

  out_sets[[name]] <- list(
    source = DATASETS[[name]],
    csv = file.path("data", paste0(name, ".csv")),
    n = n, d = d, columns = I(colnames(X)),
    n_duplicated_rows = length(dup),
    duplicated_rows = if (length(dup)) cbind(dup, first_of) else list(),
    hc = list(
      modelName = hcm, use = hcu,
      n_merges = nrow(pairs),
      pairs = pairs,
      initial_partition = I(as.integer(ip)),
      initial_partition_unique = as.integer(attr(ip, "unique")),
      z = unname(attr(h, "data")),
      classes = classes
    ),
    cells = cells,
    mclust_bic = mclust_bic,
    mclust_returnCodes = mclust_rc,
    cells_match_mclust_bic = list(identical_na = same_na, max_abs_diff = diff),
    best = best,
    timing = list(
      runs = N_TIMING,
      mclust_4_models = t4,
      mclust_14_models = t14,
      hc_VVV_SVD = thc,
      hc_default_args = thc0
    )
  )
  message(sprintf("  best %s,%d BIC=%.6f  | times: 4 models %ss, 14 models %ss, hc %ss",
              mc$modelName, mc$G, mc$bic, format(t4$median_s), format(t14$median_s),
              format(thc$median_s)))
}

ec <- emControl()
result <- list(
  R_version = R.version.string,
  mclust_version = as.character(packageVersion("mclust")),
  jsonlite_version = as.character(packageVersion("jsonlite")),
  platform = R.version$platform,
  blas = extSoftVersion()[["BLAS"]],
  lapack = La_library(),
  date = format(Sys.time(), "%Y-%m-%dT%H:%M:%SZ", tz = "UTC"),
  number_format = "%.17g",
  mclust_options = list(
    hcModelName = mclust.options("hcModelName"),
    hcUse = mclust.options("hcUse"),
    subset = mclust.options("subset"),
    emModelNames = I(mclust.options("emModelNames")),
    emControl = list(eps = ec$eps, tol = I(ec$tol), itmax = I(ec$itmax),
                     equalPro = ec$equalPro)
  ),
  models = I(MODELS),
  G = I(GS),
  datasets = out_sets
)

json_path <- file.path(ref_dir, "mclust_reference.json")
writeLines(to_json(result), json_path)
# Sanity: valid JSON.
invisible(jsonlite::fromJSON(json_path, simplifyVector = FALSE))
cat(sprintf("wrote %s (%.0f kB)\n", json_path, file.size(json_path) / 1024))
