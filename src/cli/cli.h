/* The operator commands: account, key, user, audit, usage, invoice, plans and migrate. Each returns
 * the process exit status: 0 on success, 1 on a failure the operator can fix (reported on stderr),
 * 2 on a usage error. */
#ifndef KN_CLI_CLI_H
#define KN_CLI_CLI_H

#include "core/config.h"

/* `konnect account ...`; argv[0] is "account". */
int cli_account(struct kn_config *c, int argc, char **argv);

/* `konnect key ...`; argv[0] is "key". */
int cli_key(struct kn_config *c, int argc, char **argv);

/* `konnect user set-password`; argv[0] is "user". */
int cli_user(struct kn_config *c, int argc, char **argv);

/* `konnect audit`; argv[0] is "audit". */
int cli_audit(struct kn_config *c, int argc, char **argv);

/* `konnect usage`: an account's billed usage in a month; argv[0] is "usage". */
int cli_usage(struct kn_config *c, int argc, char **argv);

/* `konnect invoice`: an account's invoice for a month, or the list of them; argv[0] is
 * "invoice". */
int cli_invoice(struct kn_config *c, int argc, char **argv);

/* `konnect plans`: the plans of the plans file; argv[0] is "plans". */
int cli_plans(struct kn_config *c, int argc, char **argv);

/* `konnect operator-key ...`: the operator API's keys; argv[0] is "operator-key". */
int cli_operator_key(struct kn_config *c, int argc, char **argv);

/* `konnect migrate`; argv[0] is "migrate". */
int cli_migrate(struct kn_config *c, int argc, char **argv);
/* konnect store copy: a SQLite store copied into PostgreSQL (store/copy.h). */
int cli_store(struct kn_config *c, int argc, char **argv);
int cli_backup(struct kn_config *c, int argc, char **argv);

#endif
