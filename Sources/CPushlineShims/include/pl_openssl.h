#ifndef PL_OPENSSL_H
#define PL_OPENSSL_H
#include <openssl/evp.h>
#include <openssl/crypto.h>
// OpenSSL macros Swift cannot import. (Owned by Crypto/.)
/// OPENSSL_free is a macro over CRYPTO_free with file/line.
void pl_openssl_free(void *p);
#endif
