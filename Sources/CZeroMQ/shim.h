#ifndef SHARDCAL_CZEROMQ_SHIM_H
#define SHARDCAL_CZEROMQ_SHIM_H
#include <zmq.h>
#endif
