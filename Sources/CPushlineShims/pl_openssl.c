#include "pl_openssl.h"
void pl_openssl_free(void *p) { OPENSSL_free(p); }
