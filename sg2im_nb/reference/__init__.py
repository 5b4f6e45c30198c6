"The published baseline and the benchmark (never imported by the rest of the package)."
