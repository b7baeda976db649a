/* Settings: defaults, environment, listen addresses and durations. */
#include <stdlib.h>

#include "core/config.h"
#include "core/util.h"
#include "unit.h"

int main(void)
{
    struct kn_config c;
    char err[256];
    int64_t d;
    long long v;

    unsetenv("KONNECT_LISTEN");
    unsetenv("KONNECT_DATA_DIR");
    CHECK(config_load(&c, err, sizeof(err)) == 0);
    CHECK_STR(c.listen_host, "127.0.0.1");
    CHECK(c.listen_port == 8080);
    CHECK_STR(c.database, "./var/konnect.db");
    CHECK_STR(c.secret_file, "./var/secret");
    CHECK(c.max_body_bytes == 1048576 && c.test_rpm == 60 && c.test_rpd == 1000);

    setenv("KONNECT_DATA_DIR", "/tmp/kd", 1);
    setenv("KONNECT_LISTEN", "0.0.0.0:9000", 1);
    setenv("KONNECT_TEST_KEY_RPM", "0", 1);
    CHECK(config_load(&c, err, sizeof(err)) == 0);
    CHECK_STR(c.database, "/tmp/kd/konnect.db");
    CHECK_STR(c.socket_path, "/tmp/kd/konnect.sock");
    CHECK_STR(c.listen_host, "0.0.0.0");
    CHECK(c.listen_port == 9000 && c.test_rpm == 0);
    setenv("KONNECT_TEST_KEY_RPM", "lots", 1);
    CHECK(config_load(&c, err, sizeof(err)) != 0);
    CHECK(strstr(err, "KONNECT_TEST_KEY_RPM") != NULL);
    unsetenv("KONNECT_TEST_KEY_RPM");
    setenv("KONNECT_MAX_BODY_BYTES", "10", 1);
    CHECK(config_load(&c, err, sizeof(err)) != 0);
    CHECK(strstr(err, "KONNECT_MAX_BODY_BYTES must be an integer between") != NULL);
    unsetenv("KONNECT_MAX_BODY_BYTES");
    /* Every numeric setting comes from one table, with its default and its range. */
    setenv("KONNECT_SESSION_IDLE", "59", 1);
    CHECK(config_load(&c, err, sizeof(err)) != 0 && strstr(err, "between 60 and") != NULL);
    unsetenv("KONNECT_SESSION_IDLE");
    CHECK(config_load(&c, err, sizeof(err)) == 0 && c.session_idle_s == 86400 &&
          c.max_body_bytes == 1024 * 1024 && c.model_timeout_ms == 300000 &&
          c.change_log_retention_days == 7 && c.threads >= 1);

    CHECK(config_set_listen(&c, "[::1]:8081") == 0 && !strcmp(c.listen_host, "::1") &&
          c.listen_port == 8081);
    CHECK(config_set_listen(&c, ":0") == 0 && c.listen_port == 0);
    CHECK(config_set_listen(&c, "8082") == 0 && c.listen_port == 8082);
    CHECK(config_set_listen(&c, "host:99999") != 0);
    CHECK(config_set_listen(&c, "host:") != 0);

    CHECK(kn_parse_duration("90", &d) != 0); /* seconds or minutes? a unit is needed */
    CHECK(kn_parse_duration("0", &d) == 0 && d == 0);
    CHECK(kn_parse_duration("90s", &d) == 0 && d == 90);
    CHECK(kn_parse_duration("15m", &d) == 0 && d == 900);
    CHECK(kn_parse_duration("24h", &d) == 0 && d == 86400);
    CHECK(kn_parse_duration("7d", &d) == 0 && d == 604800);
    CHECK(kn_parse_duration("x", &d) != 0);
    CHECK(kn_parse_duration("", &d) != 0);
    CHECK(kn_parse_duration("-5s", &d) != 0);
    CHECK(kn_parse_int("12", 0, 20, &v) == 0 && v == 12);
    CHECK(kn_parse_int("12a", 0, 20, &v) != 0);
    CHECK(kn_parse_int("21", 0, 20, &v) != 0);
    char t[32];
    CHECK_STR(kn_format_time(0, t, sizeof(t)), "-");
    CHECK_STR(kn_format_time(86400, t, sizeof(t)), "1970-01-02T00:00:00Z");
    /* Absolute paths for messages: resolved where the directories exist, tidied otherwise. */
    char abs[4096];
    CHECK_STR(kn_abs_path("/tmp/../tmp/x", abs, sizeof(abs)), "/tmp/x");
    CHECK_STR(kn_abs_path("/nonexistent-dir/./a/../b", abs, sizeof(abs)), "/nonexistent-dir/b");
    CHECK(kn_abs_path("./var/konnect.db", abs, sizeof(abs))[0] == '/' &&
          strstr(abs, "/./") == NULL);
    return unit_result();
}
