/* API keys: their format, checksum, keyed hash and the server secret; see apikey.h. */
#include "keys/apikey.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/base62.h"

/* Indexed by enum apikey_mode. */
static const struct {
    const char *prefix, *name;
    size_t len;
} kinds[] = {
    {"sk_test_", "test", 8},
    {"sk_live_", "live", 8},
    {"sk_admin_", "admin", 9},
    {"sk_op_", "operator", 6},
};
#define KINDS (sizeof(kinds) / sizeof(kinds[0]))

static void checksum(const char *s, size_t len, char out[APIKEY_CHECKSUM_LEN])
{
    uLong crc = crc32(0L, (const Bytef *)s, (uInt)len);
    base62_encode_fixed((uint64_t)crc, out, APIKEY_CHECKSUM_LEN);
}

size_t apikey_generate(enum apikey_mode mode, char out[APIKEY_MAX_LEN + 1])
{
    size_t pre = kinds[mode].len;

    memcpy(out, kinds[mode].prefix, pre);
    base62_random(out + pre, APIKEY_BODY_LEN);
    checksum(out, pre + APIKEY_BODY_LEN, out + pre + APIKEY_BODY_LEN);
    out[pre + APIKEY_BODY_LEN + APIKEY_CHECKSUM_LEN] = '\0';
    return pre + APIKEY_BODY_LEN + APIKEY_CHECKSUM_LEN;
}

int apikey_parse(const char *s, size_t len, enum apikey_mode *mode)
{
    char sum[APIKEY_CHECKSUM_LEN];
    size_t m, pre;

    for (m = 0; m < KINDS; m++)
        if (len == kinds[m].len + APIKEY_BODY_LEN + APIKEY_CHECKSUM_LEN &&
            memcmp(s, kinds[m].prefix, kinds[m].len) == 0)
            break;
    if (m == KINDS)
        return -1;
    pre = kinds[m].len;
    for (size_t i = pre; i < len; i++)
        if (base62_value((unsigned char)s[i]) < 0)
            return -1;
    checksum(s, pre + APIKEY_BODY_LEN, sum);
    /* The checksum is public information, so a plain comparison leaks nothing. */
    if (memcmp(sum, s + pre + APIKEY_BODY_LEN, APIKEY_CHECKSUM_LEN) != 0)
        return -1;
    *mode = (enum apikey_mode)m;
    return 0;
}

void apikey_hash(const uint8_t secret[APIKEY_SECRET_LEN], const char *s, size_t len,
                 uint8_t out[APIKEY_HASH_LEN])
{
    crypto_generichash(out, APIKEY_HASH_LEN, (const unsigned char *)s, len, secret,
                       APIKEY_SECRET_LEN);
}

void apikey_hint(const char *key, char out[APIKEY_HINT_SIZE])
{
    size_t pre = strcspn(key + 3, "_") + 4, len = strlen(key);

    memcpy(out, key, pre);
    memcpy(out + pre, "\xe2\x80\xa6", 3);
    memcpy(out + pre + 3, key + len - 4, 4);
    out[pre + 7] = '\0';
}

const char *apikey_mode_name(enum apikey_mode mode)
{
    return (unsigned)mode < KINDS ? kinds[mode].name : "test";
}

int apikey_mode_parse(const char *name, enum apikey_mode *out)
{
    for (size_t m = 0; m < APIKEY_MODE_OPERATOR; m++) {
        if (strcmp(name, kinds[m].name) == 0) {
            *out = (enum apikey_mode)m;
            return 0;
        }
    }
    return -1;
}

static const char *const env_names[] = {"development", "staging", "production"};

const char *apikey_env_name(enum apikey_env env)
{
    return (unsigned)env < 3 ? env_names[env] : "development";
}

int apikey_env_parse(const char *name, enum apikey_env *out)
{
    for (int i = 0; i < 3; i++) {
        if (strcmp(name, env_names[i]) == 0) {
            *out = (enum apikey_env)i;
            return 0;
        }
    }
    return -1;
}

/* Wipes the secret's text, closes its file and returns ret. */
static int secret_done(int fd, char *text, size_t size, int ret)
{
    sodium_memzero(text, size);
    close(fd);
    return ret;
}

static int secret_create(const char *path, uint8_t out[APIKEY_SECRET_LEN], char *err,
                         size_t errsize)
{
    char hex[APIKEY_SECRET_LEN * 2 + 2];
    int fd, ret = -1;

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errsize, "cannot create server secret %s: %s", path, strerror(errno));
        return -1;
    }
    randombytes_buf(out, APIKEY_SECRET_LEN);
    sodium_bin2hex(hex, sizeof(hex), out, APIKEY_SECRET_LEN);
    hex[APIKEY_SECRET_LEN * 2] = '\n';
    if (write(fd, hex, APIKEY_SECRET_LEN * 2 + 1) != APIKEY_SECRET_LEN * 2 + 1 || fsync(fd) != 0) {
        snprintf(err, errsize, "cannot write server secret %s: %s", path, strerror(errno));
        unlink(path);
    } else {
        ret = 0;
    }
    return secret_done(fd, hex, sizeof(hex), ret);
}

int apikey_secret_load(const char *path, int create, uint8_t out[APIKEY_SECRET_LEN], char *err,
                       size_t errsize)
{
    char buf[256];
    struct stat st;
    size_t binlen = 0;
    ssize_t n;
    int fd, ret = -1;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && create)
            return secret_create(path, out, err, errsize);
        snprintf(err, errsize, "cannot open server secret %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || (st.st_mode & 077) != 0) {
        snprintf(err, errsize, "server secret %s must be readable by its owner only (chmod 600 %s)",
                 path, path);
        goto out;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    if (n < APIKEY_SECRET_LEN * 2) {
        snprintf(err, errsize, "server secret %s is too short", path);
        goto out;
    }
    buf[n] = '\0';
    if (sodium_hex2bin(out, APIKEY_SECRET_LEN, buf, (size_t)n, " \r\n", &binlen, NULL) != 0 ||
        binlen != APIKEY_SECRET_LEN) {
        snprintf(err, errsize, "server secret %s must hold 64 hexadecimal characters", path);
        goto out;
    }
    ret = 0;
out:
    return secret_done(fd, buf, sizeof(buf), ret);
}
