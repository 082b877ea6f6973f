#ifndef SHARDCAL_CIMAGECODECS_SHIM_H
#define SHARDCAL_CIMAGECODECS_SHIM_H
#include <stdio.h>
#include <stddef.h>
#include <jpeglib.h>
#include <png.h>
#endif
