/* Usage reports and invoices rendered for people and spreadsheets: aligned text for the CLI, CSV
 * for an invoice's download (see report.h). They read the JSON documents report.c makes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/termsafe.h"
#include "core/util.h"
#include "metering/report.h"

#define DAY 86400

/* ---- money --------------------------------------------------------------------------------- */

static uint64_t magnitude(int64_t v)
{
    return v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
}

char *report_decimal(int64_t micros, char *buf, size_t bufsize)
{
    uint64_t m = magnitude(micros);
    snprintf(buf, bufsize, "%s%llu.%06llu", micros < 0 ? "-" : "",
             (unsigned long long)(m / 1000000), (unsigned long long)(m % 1000000));
    return buf;
}

/* The currency code in capitals, as people write it ("USD"). */
static char *upper_code(const char *currency, char *code, size_t size)
{
    size_t i;
    for (i = 0; currency[i] != '\0' && i + 1 < size; i++)
        code[i] = (char)(currency[i] >= 'a' && currency[i] <= 'z' ? currency[i] - 32 : currency[i]);
    code[i] = '\0';
    return code;
}

char *report_money(int64_t micros, const char *currency, char *buf, size_t bufsize)
{
    uint64_t m = magnitude(micros);
    unsigned long long units = m / 1000000, frac = m % 1000000;
    const char *sign = micros < 0 ? "-" : "";
    char code[8];

    if (strcmp(currency, "usd") == 0)
        snprintf(buf, bufsize, "%s$%llu.%06llu", sign, units, frac);
    else
        snprintf(buf, bufsize, "%s%llu.%06llu %s", sign, units, frac,
                 upper_code(currency, code, sizeof(code)));
    return buf;
}

/* ---- renderings ---------------------------------------------------------------------------- */

static const char *str(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v != NULL ? v : "";
}

static int64_t num(const json_t *o, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(o, key));
}

static FILE *open_text(char **buf, size_t *len)
{
    FILE *f = open_memstream(buf, len);
    if (f == NULL)
        kn_fatal("out of memory");
    return f;
}

static char *close_text(FILE *f, char **buf, size_t *len)
{
    if (fclose(f) != 0 || *buf == NULL)
        kn_fatal("out of memory");
    if (len != NULL)
        *len = strlen(*buf);
    return *buf;
}

/* One CSV field: quoted when it holds a comma, a quote or a line break; text that a spreadsheet
 * would run as a formula is defused with a leading '. */
static void csv_field(FILE *f, const char *s, int text, int last)
{
    int formula = text && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' ||
                           s[0] == '\t' || s[0] == '\r');
    if (formula || strpbrk(s, ",\"\r\n") != NULL) {
        fputc('"', f);
        if (formula)
            fputc('\'', f);
        for (; *s != '\0'; s++) {
            if (*s == '"')
                fputc('"', f);
            fputc(*s, f);
        }
        fputc('"', f);
    } else {
        fputs(s, f);
    }
    fputs(last ? "\r\n" : ",", f);
}

static void csv_int(FILE *f, int64_t v)
{
    fprintf(f, "%lld,", (long long)v);
}

static void csv_row(FILE *f, const json_t *inv, const char *type, const json_t *line)
{
    char amount[REPORT_MONEY_SIZE];
    int64_t micros = num(line, type[0] == 'i' ? "amount_micros" : "total_micros");

    csv_field(f, type, 0, 0);
    csv_field(f, str(inv, "number"), 0, 0);
    csv_field(f, str(inv, "month"), 0, 0);
    csv_field(f, type[0] == 'i' ? str(line, "model") : "", 1, 0);
    csv_field(f, type[0] == 'i' ? str(line, "key_id") : "", 1, 0);
    csv_field(f, type[0] == 'i' ? str(line, "key_name") : "", 1, 0);
    csv_field(f, type[0] == 'i' ? str(line, "environment") : "", 1, 0);
    csv_int(f, num(line, "requests"));
    csv_int(f, num(line, "input_tokens"));
    csv_int(f, num(line, "output_tokens"));
    csv_int(f, micros);
    csv_field(f, report_decimal(micros, amount, sizeof(amount)), 0, 0);
    csv_field(f, str(inv, "currency"), 0, 0);
    /* An item's unit prices, when known; empty for the total and for items without them. */
    const json_t *up = type[0] == 'i' ? json_object_get(line, "unit_prices") : NULL;
    static const char *const unit[] = {"per_request_micros", "per_million_input_tokens_micros",
                                       "per_million_output_tokens_micros"};
    for (size_t i = 0; i < 3; i++) {
        char v[24] = "";
        if (json_is_object(up))
            snprintf(v, sizeof(v), "%lld", (long long)num(up, unit[i]));
        csv_field(f, v, 0, i == 2);
    }
}

char *report_invoice_csv(const json_t *invoice, size_t *len)
{
    char *buf = NULL;
    size_t size = 0, i;
    FILE *f = open_text(&buf, &size);
    json_t *line;

    fputs("type,invoice,month,model,key_id,key_name,environment,requests,input_tokens,"
          "output_tokens,amount_micros,amount,currency,unit_price_per_request_micros,"
          "unit_price_per_million_input_tokens_micros,"
          "unit_price_per_million_output_tokens_micros\r\n",
          f);
    json_array_foreach(json_object_get(invoice, "lines"), i, line)
        csv_row(f, invoice, "item", line);
    csv_row(f, invoice, "total", invoice);
    close_text(f, &buf, &size);
    *len = size;
    return buf;
}

/* Stored text for the text renderings, which go to terminals (core/termsafe.h). */
static const char *safe(const char *s, char *buf, size_t size)
{
    return termsafe_copy(buf, size, s);
}

/* Writes s in a column `width` characters wide (UTF-8 aware): cut with '~' when longer. Text
 * from the store is made terminal-safe first. */
static void column(FILE *f, const char *text, int width, int right)
{
    char buf[TERMSAFE_SIZE(300)];
    const char *s = safe(text, buf, sizeof(buf));
    int chars = 0;
    size_t bytes = 0, cut = 0;

    for (; s[bytes] != '\0'; bytes++) {
        if (((unsigned char)s[bytes] & 0xc0) == 0x80)
            continue;
        if (chars == width - 1)
            cut = bytes;
        chars++;
    }
    if (chars > width) {
        fprintf(f, "%.*s~", (int)cut, s);
        return;
    }
    if (right)
        fprintf(f, "%*s%s", width - chars, "", s);
    else
        fprintf(f, "%s%*s", s, width - chars, "");
}

static void count_column(FILE *f, int64_t v, int width)
{
    char n[32];
    snprintf(n, sizeof(n), "%lld", (long long)v);
    fputs("  ", f);
    column(f, n, width, 1);
}

static void money_column(FILE *f, int64_t v, const char *currency, int width)
{
    char m[REPORT_MONEY_SIZE];
    fputs("  ", f);
    column(f, report_money(v, currency, m, sizeof(m)), width, 1);
}

/* The four figures every usage table ends with: requests, input and output tokens, and an amount
 * (the member named `amount`) in currency. */
static void usage_columns(FILE *f, const json_t *o, const char *amount, const char *currency)
{
    count_column(f, num(o, "requests"), 10);
    count_column(f, num(o, "input_tokens"), 12);
    count_column(f, num(o, "output_tokens"), 13);
    money_column(f, num(o, amount), currency, 16);
}

/* A table's title row: each title in its column, two spaces apart. */
struct column_def {
    const char *title;
    int width, right;
    const char *member; /* The text member a row shows in it; NULL for the usage columns. */
};

/* One row: the text columns of cols (those with a member) from obj, then the usage columns with
 * `amount` as the money member, and the end of the line. */
static void table_row(FILE *f, const json_t *obj, const struct column_def *cols, size_t n,
                      const char *amount, const char *currency)
{
    for (size_t i = 0; i < n && cols[i].member != NULL; i++) {
        if (i > 0)
            fputs("  ", f);
        column(f, str(obj, cols[i].member), cols[i].width, cols[i].right);
    }
    usage_columns(f, obj, amount, currency);
    fputc('\n', f);
}

static void header_row(FILE *f, const struct column_def *cols, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            fputs("  ", f);
        column(f, cols[i].title, cols[i].width, cols[i].right);
    }
    fputc('\n', f);
}

/* Each model's unit prices, once per model, under the invoice's lines. */
static void unit_price_lines(FILE *f, const json_t *invoice, const char *cur)
{
    const json_t *lines = json_object_get(invoice, "lines"), *line;
    size_t i, n = 0;

    json_array_foreach(lines, i, line)
    {
        const json_t *up = json_object_get(line, "unit_prices");
        char model[TERMSAFE_SIZE(128)], a[REPORT_MONEY_SIZE], b[REPORT_MONEY_SIZE],
            c[REPORT_MONEY_SIZE];
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(str(json_array_get(lines, j), "model"), str(line, "model")) == 0 &&
                   json_is_object(json_object_get(json_array_get(lines, j), "unit_prices"));
        if (!json_is_object(up) || seen)
            continue;
        if (n++ == 0)
            fputs("\nUnit prices\n", f);
        fprintf(f,
                "  %s: %s per request, %s per million input tokens, %s per million output "
                "tokens\n",
                safe(str(line, "model"), model, sizeof(model)),
                report_money(num(up, "per_request_micros"), cur, a, sizeof(a)),
                report_money(num(up, "per_million_input_tokens_micros"), cur, b, sizeof(b)),
                report_money(num(up, "per_million_output_tokens_micros"), cur, c, sizeof(c)));
    }
}

char *report_invoice_text(const json_t *invoice)
{
    const char *cur = str(invoice, "currency");
    const json_t *acct = json_object_get(invoice, "account"), *line;
    char *buf = NULL, last[32], code[8];
    size_t size = 0, i;
    int64_t month;
    FILE *f = open_text(&buf, &size);

    kn_month_parse(str(invoice, "month"), &month);
    report_day_format(kn_month_start(month + 1) / DAY - 1, last, sizeof(last));
    if (json_is_string(json_object_get(invoice, "number")))
        fprintf(f, "Invoice   %s\n", str(invoice, "number"));
    else
        fprintf(f, "Invoice   %s\n",
                strcmp(str(invoice, "status"), "open") == 0
                    ? "draft (numbered once the month is over)"
                    : "none (nothing was billed this month)");
    const json_t *seller = json_object_get(invoice, "seller");
    if (json_is_object(seller)) {
        char sb[TERMSAFE_SIZE(512)];
        fprintf(f, "Seller    %s\n", safe(str(seller, "name"), sb, sizeof(sb)));
        const char *a = str(seller, "address");
        while (*a != '\0') {
            size_t n = strcspn(a, "\n");
            char part[513];
            snprintf(part, sizeof(part), "%.*s", (int)n, a);
            fprintf(f, "          %s\n", safe(part, sb, sizeof(sb)));
            a += n + (a[n] == '\n');
        }
        if (str(seller, "email")[0])
            fprintf(f, "          %s\n", safe(str(seller, "email"), sb, sizeof(sb)));
        if (str(seller, "tax_id")[0])
            fprintf(f, "Tax id    %s\n", safe(str(seller, "tax_id"), sb, sizeof(sb)));
    }
    fprintf(f, "Status    %s\n",
            strcmp(str(invoice, "status"), "open") == 0
                ? "open (the month is not over: amounts can still grow)"
                : "final");
    char email[TERMSAFE_SIZE(STORE_EMAIL_MAX)];
    fprintf(f, "Account   %s (%s)\n", safe(str(acct, "email"), email, sizeof(email)),
            str(acct, "id"));
    fprintf(f, "Period    %.10s to %s (UTC)\n", str(invoice, "period_start"), last);
    fprintf(f, "Currency  %s\n", upper_code(cur, code, sizeof(code)));
    if (json_is_object(json_object_get(invoice, "plan")))
        fprintf(f, "Plan      %s\n", str(json_object_get(invoice, "plan"), "name"));
    fputc('\n', f);
    static const struct column_def cols[] = {
        {"MODEL", 24, 0, "model"}, {"KEY", 24, 0, "key_id"},      {"KEY NAME", 20, 0, "key_name"},
        {"REQUESTS", 10, 1, NULL}, {"INPUT TOKENS", 12, 1, NULL}, {"OUTPUT TOKENS", 13, 1, NULL},
        {"AMOUNT", 16, 1, NULL},
    };
    header_row(f, cols, sizeof(cols) / sizeof(cols[0]));
    json_array_foreach(json_object_get(invoice, "lines"), i, line)
        table_row(f, line, cols, sizeof(cols) / sizeof(cols[0]), "amount_micros", cur);
    if (json_array_size(json_object_get(invoice, "lines")) == 0)
        fputs("(no billed usage in this period)\n", f);
    column(f, "TOTAL", 72, 0);
    usage_columns(f, invoice, "total_micros", cur);
    fputc('\n', f);
    unit_price_lines(f, invoice, cur);
    return close_text(f, &buf, &size);
}

static void quota_line(FILE *f, const char *label, const json_t *q)
{
    const json_t *limit = json_object_get(q, "limit");

    fprintf(f, "%-10s%lld used", label, (long long)num(q, "used"));
    if (json_is_null(limit))
        fputs(", no limit", f);
    else
        fprintf(f, " of %lld, %lld remaining", (long long)json_integer_value(limit),
                (long long)num(q, "remaining"));
    fprintf(f, " (%s)\n",
            strcmp(str(q, "source"), "plan") == 0 ? "plan quota" : "account override");
}

char *report_usage_text(const json_t *usage)
{
    const char *cur = str(usage, "currency");
    const json_t *acct = json_object_get(usage, "account"),
                 *quota = json_object_get(usage, "quota"),
                 *totals = json_object_get(usage, "totals"), *k;
    char *buf = NULL, money[REPORT_MONEY_SIZE];
    size_t size = 0, i;
    FILE *f = open_text(&buf, &size);
    int current = json_is_true(json_object_get(usage, "current"));

    char email[TERMSAFE_SIZE(STORE_EMAIL_MAX)];
    fprintf(f, "Usage of %s (%s) in %s, as of %s\n\n",
            safe(str(acct, "email"), email, sizeof(email)), str(acct, "id"), str(usage, "month"),
            str(usage, "as_of"));
    fprintf(f, "%-10s%s\n", "Plan", str(json_object_get(usage, "plan"), "name"));
    if (current) {
        quota_line(f, "Requests", json_object_get(quota, "requests"));
        quota_line(f, "Tokens", json_object_get(quota, "tokens"));
        fprintf(f, "%-10s%s\n", "Resets", str(quota, "resets_at"));
    } else {
        fprintf(f, "%-10s%lld\n", "Requests", (long long)num(totals, "requests"));
        fprintf(f, "%-10s%lld\n", "Tokens", (long long)num(totals, "tokens"));
    }
    fprintf(f, "%-10s%s\n\n", "Cost",
            report_money(num(totals, "cost_micros"), cur, money, sizeof(money)));
    if (json_array_size(json_object_get(usage, "keys")) == 0) {
        fputs("No billed usage in this month.\n", f);
        return close_text(f, &buf, &size);
    }
    static const struct column_def cols[] = {
        {"KEY", 24, 0, "key_id"},       {"NAME", 20, 0, "name"},
        {"MODE", 4, 0, "mode"},         {"ENVIRONMENT", 11, 0, "environment"},
        {"REQUESTS", 10, 1, NULL},      {"INPUT TOKENS", 12, 1, NULL},
        {"OUTPUT TOKENS", 13, 1, NULL}, {"COST", 16, 1, NULL},
    };
    header_row(f, cols, sizeof(cols) / sizeof(cols[0]));
    json_array_foreach(json_object_get(usage, "keys"), i, k)
        table_row(f, k, cols, sizeof(cols) / sizeof(cols[0]), "cost_micros", cur);
    return close_text(f, &buf, &size);
}

char *report_months_text(const json_t *months)
{
    static const struct column_def cols[] = {
        {"MONTH", 8, 0, "month"},  {"INVOICE", 22, 0, "number"},  {"STATUS", 6, 0, "status"},
        {"REQUESTS", 10, 1, NULL}, {"INPUT TOKENS", 12, 1, NULL}, {"OUTPUT TOKENS", 13, 1, NULL},
        {"TOTAL", 16, 1, NULL},
    };
    char *buf = NULL;
    size_t size = 0, i;
    FILE *f = open_text(&buf, &size);
    const json_t *m;

    header_row(f, cols, sizeof(cols) / sizeof(cols[0]));
    json_array_foreach(months, i, m)
    {
        json_t *row = json_copy((json_t *)m);
        if (!json_is_string(json_object_get(m, "number")))
            json_object_set_new(row, "number",
                                json_string(strcmp(str(m, "status"), "open") == 0 ? "draft" : "-"));
        table_row(f, row, cols, sizeof(cols) / sizeof(cols[0]), "total_micros", str(m, "currency"));
        json_decref(row);
    }
    return close_text(f, &buf, &size);
}
