/* The schema migrations, numbered SQL files under src/store/migrations/<backend>/ embedded at
 * build time. A number means the same schema on every backend: PostgreSQL's first file is 007,
 * SQLite's 001 to 007 in one. */
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
/* The PostgreSQL schema's, from src/store/migrations/postgresql/. */
extern const struct store_migration store_pg_migrations[];
extern const size_t store_pg_migrations_count;

#endif
