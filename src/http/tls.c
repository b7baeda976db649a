/* TLS on the main listener; see tls.h. */
#include "http/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define H2O_USE_EPOLL 1
#include <h2o.h>

#include "core/util.h"

/* TLS 1.2's ciphers: ECDHE and AEAD only (TLS 1.3 has nothing else), none that HTTP/2 forbids. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

struct pair {
    X509 *leaf;
    EVP_PKEY *key;
    STACK_OF(X509) * chain;
};

struct tls {
    SSL_CTX *ctx;
    pthread_mutex_t lock; /* Guards cur: handshakes read it, reloads replace it. */
    struct pair cur;
    char *cert_path, *key_path;
};

static void pair_free(struct pair *p)
{
    X509_free(p->leaf);
    EVP_PKEY_free(p->key);
    sk_X509_pop_free(p->chain, X509_free);
    memset(p, 0, sizeof(*p));
}

/* An encrypted key would make OpenSSL ask on the terminal: no passphrase is given instead. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

/* OpenSSL's reason for the last failure, for a message. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
    return r != NULL ? r : "unknown error";
}

static int load_pair(const char *cert_path, const char *key_path, struct pair *out, char *info,
                     size_t infosize, char *err, size_t errsize)
{
    struct pair p = {0};
    BIO *bio;
    X509 *x;
    struct stat st;

    ERR_clear_error();
    if ((bio = BIO_new_file(cert_path, "r")) == NULL) {
        snprintf(err, errsize, "cannot read KONNECT_TLS_CERT %s", cert_path);
        return -1;
    }
    p.leaf = PEM_read_bio_X509_AUX(bio, NULL, no_passphrase, NULL);
    p.chain = sk_X509_new_null();
    while (p.leaf != NULL && (x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL)) != NULL)
        sk_X509_push(p.chain, x);
    BIO_free(bio);
    if (p.leaf == NULL) {
        snprintf(err, errsize, "KONNECT_TLS_CERT %s holds no PEM certificate (%s)", cert_path,
                 ssl_reason());
        pair_free(&p);
        return -1;
    }
    ERR_clear_error(); /* The end of the file ends the chain. */
    if ((bio = BIO_new_file(key_path, "r")) == NULL) {
        snprintf(err, errsize, "cannot read KONNECT_TLS_KEY %s", key_path);
        pair_free(&p);
        return -1;
    }
    p.key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (p.key == NULL) {
        snprintf(err, errsize, "KONNECT_TLS_KEY %s holds no unencrypted PEM private key (%s)",
                 key_path, ssl_reason());
        pair_free(&p);
        return -1;
    }
    if (X509_check_private_key(p.leaf, p.key) != 1) {
        snprintf(err, errsize, "KONNECT_TLS_KEY %s is not the key of KONNECT_TLS_CERT %s", key_path,
                 cert_path);
        pair_free(&p);
        return -1;
    }
    if (stat(key_path, &st) == 0 && (st.st_mode & 077) != 0)
        fprintf(stderr,
                "konnect: warning: KONNECT_TLS_KEY %s can be read by other users (chmod 600 "
                "it)\n",
                key_path);
    char subject[256] = "", until[64] = "";
    X509_NAME_oneline(X509_get_subject_name(p.leaf), subject, sizeof(subject));
    if ((bio = BIO_new(BIO_s_mem())) != NULL) {
        if (ASN1_TIME_print(bio, X509_get0_notAfter(p.leaf)) == 1) {
            int n = BIO_read(bio, until, (int)sizeof(until) - 1);
            until[n > 0 ? n : 0] = '\0';
        }
        BIO_free(bio);
    }
    if (X509_cmp_current_time(X509_get0_notAfter(p.leaf)) < 0)
        fprintf(stderr, "konnect: warning: the TLS certificate %s expired on %s\n", subject, until);
    snprintf(info, infosize, "TLS certificate %s with %d intermediates, valid until %s", subject,
             sk_X509_num(p.chain), until);
    ERR_clear_error();
    *out = p;
    return 0;
}

/* Every handshake: the pair in force. */
static int on_cert(SSL *ssl, void *arg)
{
    struct tls *t = arg;
    int ok;

    pthread_mutex_lock(&t->lock);
    ok = SSL_use_cert_and_key(ssl, t->cur.leaf, t->cur.key, t->cur.chain, 1) == 1;
    pthread_mutex_unlock(&t->lock);
    return ok ? 1 : 0;
}

struct tls *tls_new(const char *cert_path, const char *key_path, char *info, size_t infosize,
                    char *err, size_t errsize)
{
    struct tls *t = kn_calloc(1, sizeof(*t));

    if (load_pair(cert_path, key_path, &t->cur, info, infosize, err, errsize) != 0) {
        free(t);
        return NULL;
    }
    t->cert_path = kn_strdup(cert_path);
    t->key_path = kn_strdup(key_path);
    pthread_mutex_init(&t->lock, NULL);
    if ((t->ctx = SSL_CTX_new(TLS_server_method())) == NULL ||
        SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(t->ctx, TLS12_CIPHERS) != 1) {
        snprintf(err, errsize, "cannot set up TLS (%s)", ssl_reason());
        tls_free(t);
        return NULL;
    }
    /* No session tickets: their key would live as long as the process, and one leak of it would
     * open every recorded session (forward secrecy). Resumption uses the per-loop cache. */
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
    SSL_CTX_set_cert_cb(t->ctx, on_cert, t);
    h2o_ssl_register_alpn_protocols(t->ctx, h2o_http2_alpn_protocols);
    return t;
}

SSL_CTX *tls_ctx(struct tls *t)
{
    return t->ctx;
}

int tls_reload(struct tls *t, char *msg, size_t size)
{
    struct pair p, old;

    if (load_pair(t->cert_path, t->key_path, &p, msg, size, msg, size) != 0)
        return -1;
    pthread_mutex_lock(&t->lock);
    old = t->cur;
    t->cur = p;
    pthread_mutex_unlock(&t->lock);
    pair_free(&old); /* Connections made with it hold references of their own. */
    return 0;
}

void tls_free(struct tls *t)
{
    if (t == NULL)
        return;
    if (t->ctx != NULL)
        SSL_CTX_free(t->ctx);
    pair_free(&t->cur);
    pthread_mutex_destroy(&t->lock);
    free(t->cert_path);
    free(t->key_path);
    free(t);
}
