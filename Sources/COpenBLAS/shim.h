#ifndef SHARDCAL_COPENBLAS_SHIM_H
#define SHARDCAL_COPENBLAS_SHIM_H
#include <cblas.h>
/* OpenBLAS extensions (openblas_set_num_threads etc.) are declared in OpenBLAS's cblas.h on Debian. */
#endif
