/* TLS on the main listener: KONNECT_TLS_CERT (PEM: the server's certificate, then the
 * intermediates) and KONNECT_TLS_KEY (its PEM private key, unencrypted). TLS 1.2 and later with
 * forward-secret AEAD ciphers, HTTP/2 or HTTP/1.1 by ALPN. One SSL_CTX for the server's life;
 * each handshake takes the certificate and key in force from a certificate callback, so that
 * tls_reload (SIGHUP) swaps them without touching connections or handshakes under way, and a
 * pair that cannot be read keeps the one in force. */
#ifndef KN_HTTP_TLS_H
#define KN_HTTP_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

struct tls;

/* Reads the pair and sets up the context. Returns NULL with a message on error. Writes what was
 * loaded (the certificate's subject and expiry) to info. */
struct tls *tls_new(const char *cert_path, const char *key_path, char *info, size_t infosize,
                    char *err, size_t errsize);

/* The context for h2o's accept (h2o_accept_ctx_t.ssl_ctx). */
SSL_CTX *tls_ctx(struct tls *t);

/* Reads the pair again; on success it serves every handshake from now on. Returns 0 with what
 * was loaded in msg, or -1 with why not (the pair in force stays). Any thread. */
int tls_reload(struct tls *t, char *msg, size_t size);

void tls_free(struct tls *t);

#endif
