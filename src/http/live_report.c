/* The live path's stage times, reported on request (SIGUSR1): every loop's histograms merged, as
 * percentiles of what happened since the last report; see live.h. */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "http/live.h"

const char *const live_stage_names[LIVE_STAGES] = {
    [LIVE_STAGE_ADMIT] = "admit",     [LIVE_STAGE_CONNECT] = "connect",
    [LIVE_STAGE_BACKEND] = "backend", [LIVE_STAGE_QUEUE] = "queue",
    [LIVE_STAGE_COMMIT] = "commit",   [LIVE_STAGE_WAKE] = "wake",
    [LIVE_STAGE_ANSWER] = "answer",   [LIVE_STAGE_TOTAL] = "total",
};

void live_report(FILE *out, struct live_worker *const *lws, size_t n, struct live_report *before)
{
    static const double at[] = {0.5, 0.9, 0.99, 0.999};
    struct live_report *now = kn_calloc(1, sizeof(*now));
    char *text = NULL;
    size_t text_len = 0;
    /* Written whole at the end, so that other lines of the same stream (the access log on
     * stderr) cannot land inside it. */
    FILE *f = open_memstream(&text, &text_len);

    if (f == NULL)
        kn_fatal("cannot write the stage report");

    for (size_t i = 0; i < n; i++)
        for (int s = 0; s < LIVE_STAGES; s++)
            histogram_read(&lws[i]->stage[s], &now->stage[s]);
    struct live_report *period = kn_malloc(sizeof(*period));
    memcpy(period, now, sizeof(*period));
    for (int s = 0; s < LIVE_STAGES; s++)
        histogram_since(&period->stage[s], &before->stage[s]);
    fprintf(f,
            "konnect: live stages of %llu answers since the last report (microseconds; max since "
            "the start):\n",
            (unsigned long long)period->stage[LIVE_STAGE_TOTAL].count);
    fprintf(f, "konnect: stage %-8s %9s %9s %9s %9s %9s\n", "", "p50", "p90", "p99", "p99.9",
            "max");
    for (int s = 0; s < LIVE_STAGES; s++) {
        fprintf(f, "konnect: stage %-8s", live_stage_names[s]);
        for (size_t p = 0; p < sizeof(at) / sizeof(at[0]); p++)
            fprintf(f, " %9.1f", (double)histogram_percentile(&period->stage[s], at[p]) / 1e3);
        fprintf(f, " %9.1f\n", (double)period->stage[s].max / 1e3);
    }
    fclose(f);
    fwrite(text, 1, text_len, out);
    fflush(out);
    free(text);
    memcpy(before, now, sizeof(*before));
    free(period);
    free(now);
}
