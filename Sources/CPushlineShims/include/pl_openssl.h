#ifndef PL_OPENSSL_H
#define PL_OPENSSL_H
#include <stddef.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
// OpenSSL macros and variadic functions Swift cannot import. (Owned by Crypto/.)

/// OPENSSL_free is a macro over CRYPTO_free with file/line.
void pl_openssl_free(void *p);

/// BN_num_bytes is a macro over BN_num_bits.
int pl_bn_num_bytes(const BIGNUM *bn);

/// Builds a P-256 EVP_PKEY with EVP_PKEY_fromdata from an encoded public point
/// (`pub`, 65 bytes uncompressed) and, if `priv` is not NULL, the private scalar.
/// In C because OSSL_PARAM_BLD keeps the parameter *names* by pointer (they must
/// be static strings, which Swift string arguments are not). Returns NULL on failure
/// (error queue set).
EVP_PKEY *pl_ec_p256_fromdata(const unsigned char *pub, size_t publen, const BIGNUM *priv);

/// Generates a fresh P-256 key. EVP_PKEY_Q_keygen (and its macro EVP_EC_gen)
/// is variadic. Returns NULL on failure (error queue set).
EVP_PKEY *pl_evp_ec_gen_p256(void);

/// BIO_get_mem_data is a macro over BIO_ctrl: points `*out` at the BIO's bytes
/// and returns their count (or a negative value).
long pl_bio_get_mem_data(BIO *bio, const char **out);

/// Reads a PEM private key (PKCS#8, encrypted PKCS#8, or a traditional
/// "EC PRIVATE KEY"/"RSA PRIVATE KEY") from memory with PEM_read_bio_PrivateKey.
/// Exists because the password needs a C callback: with `password` NULL an
/// encrypted key fails instead of OpenSSL prompting on the terminal.
/// Returns NULL on failure (error queue set).
EVP_PKEY *pl_pem_read_private_key(const void *pem, int len, const char *password);
#endif
