/* The SQLite schema migrations, numbered SQL files under src/store/migrations/sqlite/ (one folder
 * per backend, with the same numbers) embedded at build time. */
#ifndef KN_STORE_MIGRATIONS_H
#define KN_STORE_MIGRATIONS_H

#include <stddef.h>

struct store_migration {
    int version;      /* The number the file name starts with. */
    const char *name; /* The file name. */
    const char *sql;  /* The file's text, NUL-terminated. */
};

/* The migrations in ascending version order, and how many there are. */
extern const struct store_migration store_migrations[];
extern const size_t store_migrations_count;

#endif
