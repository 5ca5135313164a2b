# Reference merges of mclust's model-based hierarchical clustering (hc, VVV)
# for tests/test_hc.py, which reads the JSON written here and never needs R.
#
#   Rscript tests/reference/make_hc_reference.R            (from the repository root)
#
# writes tests/reference/mclust_hc_small.json.  Needs R with mclust and jsonlite.
#
# With MCLUST_SRC set to an unpacked mclust source tree (the directory holding
# src/mclust.f), it also compiles mclust's Fortran with the one line of hcvvv
# that stores a merged cluster's triangular factor corrected (it copies row 1
# of the factor into every stored row) and records that build's merges as
# "pairs_fixed": the merges of the criterion with the true scatter matrices,
# computed by mclust's own code.  Needs a Fortran compiler (R CMD SHLIB).

suppressPackageStartupMessages({
  library(mclust)
  library(jsonlite)
})

out_path <- file.path("tests", "reference", "mclust_hc_small.json")

# Numbers as JSON with 17 significant digits, so that doubles round-trip.
num <- function(x) {
  x <- as.matrix(x)
  rows <- apply(x, 1, function(r) paste0("[", paste(sprintf("%.17g", r), collapse = ","), "]"))
  structure(paste0("[", paste(rows, collapse = ","), "]"), class = "json")
}
pairs_of <- function(h) t(unclass(h)[, , drop = FALSE])  # (g - 1) x 2, 1-based labels
cuts_of <- function(h, G = 2:6) {
  cl <- hclass(h, G)
  setNames(lapply(as.character(G), function(g) as.integer(cl[, g])), as.character(G))
}

# hcvvv called as hcVVV calls it, from a given DLL (stock mclust or the build
# with the stored factor corrected).
hcvvv_pairs <- function(z, partition, dll) {
  n <- nrow(z); p <- ncol(z)
  partition <- partconv(partition, consec = TRUE)
  l <- length(unique(partition)); ns <- l - 1
  ld <- max(n, (l * (l - 1)) / 2 + 1, 3 * ns)
  alpha <- max(mclust:::traceW(z / sqrt(n * p)), .Machine$double.eps)
  res <- .Fortran("hcvvv", cbind(z, 0.), as.integer(n), as.integer(p),
                  as.integer(partition), as.integer(l), as.integer(ns),
                  as.double(alpha), as.double(1), double(p), double(p * p),
                  double(p * p), double(p * p), as.integer(ld), double(ld),
                  PACKAGE = dll)
  m <- res[[1]][1:ns, 1:2, drop = FALSE]
  cbind(pmin(m[, 1], m[, 2]), pmax(m[, 1], m[, 2]))
}

fixed_dll <- NULL
src <- Sys.getenv("MCLUST_SRC")
if (nzchar(src)) {
  dir <- tempfile("hcfix")
  dir.create(dir)
  f <- readLines(file.path(src, "src", "mclust.f"))
  i <- grep("call dcopy( p, r(1,1), p, x(l,1), n)", f, fixed = TRUE)
  stopifnot(length(i) == 1)
  f[i] <- sub("r(1,1)", "r(k,1)", f[i], fixed = TRUE)
  writeLines(f, file.path(dir, "mclust.f"))
  file.copy(file.path(src, "src", c("mclust2.f", "util.f")), dir)
  writeLines("PKG_LIBS = $(LAPACK_LIBS) $(BLAS_LIBS) $(FLIBS)", file.path(dir, "Makevars"))
  owd <- setwd(dir)
  status <- system2(file.path(R.home("bin"), "R"),
                    c("CMD", "SHLIB", "-o", "hcfix.so", "mclust.f", "mclust2.f", "util.f"))
  setwd(owd)
  stopifnot(status == 0)
  dyn.load(file.path(dir, "hcfix.so"))
  fixed_dll <- "hcfix"
}

entry <- function(X, use = "SVD", dup = TRUE, cuts = TRUE, data = TRUE, fixed = FALSE) {
  X <- data.matrix(X)
  dimnames(X) <- NULL
  h <- hc(X, use = use)  # as Mclust calls it: no partition, so single rows
  e <- list(use = use, pairs = pairs_of(h))
  if (data) {
    e$X <- num(X)
    e$z <- num(attr(h, "data"))
  }
  if (cuts) e$cuts <- cuts_of(h)
  if (dup) {
    part <- dupPartition(X)
    hd <- hc(X, use = use, partition = part)
    e$dup_partition <- as.integer(attr(hd, "initialPartition"))
    e$dup_pairs <- pairs_of(hd)
    if (cuts) e$dup_cuts <- cuts_of(hd)
  }
  if (fixed && !is.null(fixed_dll)) {
    z <- attr(h, "data")
    e$pairs_fixed <- hcvvv_pairs(z, seq_len(nrow(X)), fixed_dll)
    if (dup) e$dup_pairs_fixed <- hcvvv_pairs(z, dupPartition(X), fixed_dll)
  }
  e
}

# 60 x 3, values with two decimals, rows 41 and 50 copies of row 7 and row 55
# a copy of row 12.
set.seed(3)
rand60 <- matrix(round(rnorm(180), 2), 60, 3)
rand60[41, ] <- rand60[7, ]
rand60[50, ] <- rand60[7, ]
rand60[55, ] <- rand60[12, ]

# Three 2-D groups (seed chosen so that hcvvv's stored factor changes a merge
# of the default hc, starting from single rows).
set.seed(15)
blobs60 <- rbind(matrix(rnorm(40), 20, 2),
                 matrix(rnorm(40, 3), 20, 2) %*% matrix(c(1, .5, 0, .5), 2),
                 matrix(rnorm(40, sd = .5), 20, 2) + 5)

# Points of an integer grid: exactly equal costs from the first merge on, so
# the merges follow mclust's tie-breaking.
grid <- as.matrix(expand.grid(1:5, 1:4))

data(wdbc, package = "mclust")
wdbc_X <- data.matrix(wdbc[, 3:32])  # the 30 features, as sklearn's load_breast_cancer

ref <- list(
  meta = list(R = R.version.string, mclust = as.character(packageVersion("mclust")),
              fixed_build = !is.null(fixed_dll)),
  faithful = entry(faithful, fixed = TRUE),
  iris = entry(iris[, 1:4], fixed = TRUE),
  rand60 = c(entry(rand60, fixed = TRUE),
             list(std_pairs = pairs_of(hc(rand60, use = "STD")),
                  vars_pairs = pairs_of(hc(rand60, use = "VARS")))),
  blobs60 = entry(blobs60, dup = FALSE, cuts = FALSE, fixed = TRUE),
  grid = entry(grid, use = "VARS", dup = FALSE),
  faithful_eruptions = entry(faithful[, 1, drop = FALSE], use = "VARS", dup = FALSE, cuts = FALSE,
                             data = FALSE),
  breast_cancer = c(entry(wdbc_X, dup = FALSE, data = FALSE),
                    list(column_sums = num(matrix(colSums(wdbc_X), 1))))
)
writeLines(toJSON(ref, auto_unbox = TRUE, digits = NA, json_verbatim = TRUE), out_path)
cat("wrote", out_path, "\n")
