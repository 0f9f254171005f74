#include "pl_openssl.h"
#include <string.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

void pl_openssl_free(void *p) { OPENSSL_free(p); }

int pl_bn_num_bytes(const BIGNUM *bn) { return BN_num_bytes(bn); }

EVP_PKEY *pl_evp_ec_gen_p256(void) { return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"); }

long pl_bio_get_mem_data(BIO *bio, const char **out) {
    char *p = NULL;
    long n = BIO_get_mem_data(bio, &p);
    *out = p;
    return n;
}

/// Copies the password given as `u` (or none: -1 fails the read, no prompt).
static int pl_password_cb(char *buf, int size, int rwflag, void *u) {
    (void)rwflag;
    if (u == NULL || size <= 0) return -1;
    size_t n = strlen((const char *)u);
    if (n > (size_t)size) return -1;
    memcpy(buf, u, n);
    return (int)n;
}

EVP_PKEY *pl_pem_read_private_key(const void *pem, int len, const char *password) {
    BIO *bio = BIO_new_mem_buf(pem, len);
    if (bio == NULL) return NULL;
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, pl_password_cb, (void *)password);
    BIO_free(bio);
    return pkey;
}

EVP_PKEY *pl_ec_p256_fromdata(const unsigned char *pub, size_t publen, const BIGNUM *priv) {
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (bld == NULL) goto done;
    if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0)) goto done;
    if (!OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, publen)) goto done;
    if (priv != NULL && !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv)) goto done;
    params = OSSL_PARAM_BLD_to_param(bld);
    if (params == NULL) goto done;
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (ctx == NULL) goto done;
    if (EVP_PKEY_fromdata_init(ctx) <= 0) goto done;
    if (EVP_PKEY_fromdata(ctx, &pkey, priv != NULL ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) <= 0) pkey = NULL;
done:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params); /* the private part came from a secure BIGNUM and sits in the secure heap */
    OSSL_PARAM_BLD_free(bld);
    return pkey;
}
