/* The accounts of a running server, by id, and the plans in force: each account's record
 * (limits/quota.h) points into the plans, and is applied again from the store whenever its plan
 * or quota changes or the plans are reloaded. Written by the store thread only; records are never
 * freed while the table lives (keys point at them), and replaced plans are kept until then too,
 * for the pointers into them that requests in flight still hold. */
#ifndef KN_LIMITS_ACCOUNTS_H
#define KN_LIMITS_ACCOUNTS_H

#include <stddef.h>

#include "limits/quota.h"
#include "metering/plans.h"
#include "store/store.h"

struct accounts;

/* Creates an empty table with `plans` in force (taken over), reloaded from plans_path (a file
 * that must exist when plans_required). */
struct accounts *accounts_new(struct plans *plans, const char *plans_path, int plans_required);

/* Frees the table, its records and every plans it held. */
void accounts_free(struct accounts *t);

/* The record of account id, created (on the default plan) when missing and create is set;
 * NULL otherwise. */
struct acctrec *accounts_get(struct accounts *t, const char *id, int create);

/* The plans in force. Safe from any thread. */
const struct plans *accounts_plans(struct accounts *t);

/* A store_account_cb: applies one stored account (its plan and quota overrides) to its record.
 * An account on a plan the plans do not define has its live traffic refused, and is named on
 * standard error once per plan name. ud is the table. */
int accounts_apply(void *ud, const struct store_account *a);

/* A store_month_total_cb: the month's billed usage of an account, at start. ud is the table. */
int accounts_load_month(void *ud, const struct store_month_total *m);

/* Puts the store's newest plans version (`konnect plans apply`) in force on every account when
 * it is newer than the plans in force. Writes what happened to msg. Returns 1 when the plans
 * changed, 0 when not, -1 when the store failed or its version is unreadable (kept). */
int accounts_sync_store_plans(struct accounts *t, struct store *s, char *msg, size_t size);

/* Reads the plans file again and puts it in force on every account (read again from s). An
 * invalid file keeps the plans in force, and so do plans from the store (which follow the store
 * only). Writes what happened to msg. Returns 0 or -1. */
int accounts_reload_plans(struct accounts *t, struct store *s, char *msg, size_t size);

#endif
