// Umbrella header of the C shim target.
//
// Swift cannot import C variadic functions (curl_easy_setopt, ...), function-like
// macros (OPENSSL_free, SQLITE_TRANSIENT, ...) or the GNU-only parts of glibc
// (epoll, eventfd, accept4). Each wrapper here is prefixed `pl_`, typed, and says
// why it exists. One header per C library, so that each has one owner.
#ifndef PL_SHIMS_H
#define PL_SHIMS_H
#include "pl_sys.h"
#include "pl_sqlite.h"
#include "pl_curl.h"
#include "pl_openssl.h"
#include "pl_systemd.h"
#include "pl_net.h"
#include "pl_pq.h"
#endif
