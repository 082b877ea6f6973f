#ifndef SHARDCAL_COPENBLAS_SHIM_H
#define SHARDCAL_COPENBLAS_SHIM_H
#include <cblas.h>
/* OpenBLAS extensions (declared in OpenBLAS's cblas.h on Debian). */
#endif
