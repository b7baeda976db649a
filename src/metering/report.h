/* Usage reports and invoices: the one place that turns the ledger's rollup (store_usage_sums)
 * into what people read, for both the CLI and the dashboard. Every figure is a sum of rollup
 * rows, which sum the ledger rows in the same transaction, so an invoice's total is exactly the
 * sum of its month's ledger prices. Money is integer micro-units of the plans file's currency
 * (1 USD = 1,000,000); nothing here uses floating point.
 *
 * Reports are jansson documents (their members are listed in docs/dashboard-api.md); the CSV
 * and text renderings are made from an invoice document. Functions that read the store return
 * STORE_OK or a negative store status, and store_errmsg says why; `now` is the Unix time that
 * decides what "this month" and "today" are. */
#ifndef KN_METERING_REPORT_H
#define KN_METERING_REPORT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "metering/plans.h"
#include "store/store.h"

/* Writes day (days since the Unix epoch) as YYYY-MM-DD to buf and returns buf. */
char *report_day_format(int64_t day, char *buf, size_t size);

/* The largest money text report_money writes, with its NUL. */
#define REPORT_MONEY_SIZE 40

/* Writes the usage report of account a for `month` (year * 12 + month - 1) to *out: plan, quota
 * in force with what is used and what remains, totals, and usage by key, by environment and by
 * day (every day of the month up to today, zeros included). The caller owns *out. A month after
 * the current one is refused (STORE_NOT_FOUND, with a message). */
int report_usage(struct store *s, const struct plans *plans, const struct store_account *a,
                 int64_t month, int64_t now, json_t **out);

/* Writes the invoice of account a for `month` to *out: line items by model and key, totals,
 * period, status ("open" for the current month, "final" for earlier ones) and its number: for a
 * final month with billed requests, "INV-" and the server's next number (six digits or more,
 * without gaps) the first time it is made, the same one every time after (store_invoice_number);
 * null for an open month's draft or an empty month. A month after the current one is refused
 * (STORE_NOT_FOUND). */
int report_invoice(struct store *s, const struct plans *plans, const struct store_account *a,
                   int64_t month, int64_t now, json_t **out);

/* Writes to *out the list of account a's invoices, newest first: the current month (always) and
 * every earlier month with billed usage, each {month, number, status, requests, input_tokens,
 * output_tokens, total_micros, currency}. */
int report_months(struct store *s, const struct plans *plans, const struct store_account *a,
                  int64_t now, json_t **out);

/* Writes to *out an object mapping each key id of account_id with billed usage in `month` to
 * {requests, input_tokens, output_tokens, tokens, cost_micros}. */
int report_key_usage(struct store *s, const char *account_id, int64_t month, json_t **out);

/* Describes a plan as JSON: {name, requests_per_month, tokens_per_month (null: unlimited),
 * price_per_request_micros, price_per_million_input_tokens_micros,
 * price_per_million_output_tokens_micros, requests_per_minute (null: none),
 * max_concurrent_requests}. Returns a new reference. */
json_t *report_plan_json(const struct plan *p);

/* Renders an invoice made by report_invoice as CSV (RFC 4180: CRLF line ends, quoted fields
 * where needed): a header row, one row per line item and a total row. Text that a spreadsheet
 * would run as a formula (starting with = + - @) is prefixed with '. Returns a malloc'd string
 * that the caller frees, and writes its length to *len. */
char *report_invoice_csv(const json_t *invoice, size_t *len);

/* Renders an invoice made by report_invoice as plain text for a terminal. Returns a malloc'd,
 * NUL-terminated string that the caller frees. */
char *report_invoice_text(const json_t *invoice);

/* Renders a usage report made by report_usage as plain text for a terminal. Returns a malloc'd,
 * NUL-terminated string that the caller frees. */
char *report_usage_text(const json_t *usage);

/* Renders the list of months made by report_months as a plain-text table for a terminal.
 * Returns a malloc'd, NUL-terminated string that the caller frees. */
char *report_months_text(const json_t *months);

/* Formats micro-units of a currency (a lower-case ISO 4217 code) with all six decimals, by
 * integer arithmetic: "$12.345678" for usd, "12.345678 EUR" for others, with a leading '-' when
 * negative. Returns buf (at least REPORT_MONEY_SIZE bytes). */
char *report_money(int64_t micros, const char *currency, char *buf, size_t bufsize);

/* Formats micro-units as a plain decimal number with six decimals ("12.345678"), for CSV.
 * Returns buf (at least REPORT_MONEY_SIZE bytes). */
char *report_decimal(int64_t micros, char *buf, size_t bufsize);

#endif
