/* The mailbox between threads: order, bound, close, the eventfd's wake-ups, and many senders. */
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>

#include "core/mailbox.h"
#include "core/util.h"
#include "unit.h"

struct item {
    struct mailbox_msg msg;
    int sender, seq;
};

static int readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

static void test_order_and_bound(void)
{
    struct mailbox mb;
    struct item it[4];

    CHECK(mailbox_init(&mb, 3, 0) == 0);
    for (int i = 0; i < 4; i++)
        it[i].seq = i;
    CHECK(mailbox_put(&mb, &it[0].msg) == MAILBOX_OK);
    CHECK(mailbox_put(&mb, &it[1].msg) == MAILBOX_OK);
    CHECK(mailbox_put(&mb, &it[2].msg) == MAILBOX_OK);
    CHECK(mailbox_put(&mb, &it[3].msg) == MAILBOX_FULL); /* Refused, still the sender's. */
    struct mailbox_msg *m = mailbox_wait(&mb, NULL);
    CHECK(m == &it[0].msg);
    CHECK(mailbox_put(&mb, &it[3].msg) == MAILBOX_OK); /* Room again. */
    CHECK(mailbox_wait(&mb, NULL) == &it[1].msg);
    CHECK(mailbox_wait(&mb, NULL) == &it[2].msg);
    CHECK(mailbox_wait(&mb, NULL) == &it[3].msg);

    /* An empty mailbox waited on with a deadline in the past gives nothing, and is not closed. */
    struct timespec past = {0, 0};
    CHECK(mailbox_wait(&mb, &past) == NULL);
    CHECK(!mailbox_closed(&mb));

    /* Closed: later puts are refused, what was put before is still taken, then NULL. */
    CHECK(mailbox_put(&mb, &it[0].msg) == MAILBOX_OK);
    mailbox_close(&mb);
    CHECK(mailbox_put(&mb, &it[1].msg) == MAILBOX_CLOSED);
    CHECK(mailbox_wait(&mb, NULL) == &it[0].msg);
    CHECK(mailbox_wait(&mb, NULL) == NULL);
    CHECK(mailbox_closed(&mb));
    mailbox_dispose(&mb);
}

static void test_fd_wakeups(void)
{
    struct mailbox mb;
    struct item it[3];

    CHECK(mailbox_init(&mb, 0, 1) == 0);
    CHECK(!readable(mailbox_fd(&mb)));
    CHECK(mailbox_put(&mb, &it[0].msg) == MAILBOX_OK);
    CHECK(readable(mailbox_fd(&mb)));
    mailbox_clear_fd(&mb);
    /* Not yet found empty: the receiver is awake, so a second put costs no write. */
    CHECK(mailbox_put(&mb, &it[1].msg) == MAILBOX_OK);
    CHECK(!readable(mailbox_fd(&mb)));
    struct mailbox_msg *list = mailbox_take_all(&mb);
    CHECK(list == &it[0].msg && list->next == &it[1].msg && list->next->next == NULL);
    CHECK(mailbox_take_all(&mb) == NULL); /* Found empty: the next put wakes again. */
    CHECK(mailbox_put(&mb, &it[2].msg) == MAILBOX_OK);
    CHECK(readable(mailbox_fd(&mb)));
    mailbox_clear_fd(&mb);
    CHECK(mailbox_take_all(&mb) == &it[2].msg);
    CHECK(mailbox_take_all(&mb) == NULL);
    mailbox_close(&mb); /* Closing wakes a polling receiver too. */
    CHECK(readable(mailbox_fd(&mb)));
    mailbox_dispose(&mb);
}

#define SENDERS 4
#define PER_SENDER 20000

static struct mailbox shared;
static struct item items[SENDERS][PER_SENDER];

static void *sender(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < PER_SENDER; i++) {
        items[id][i].sender = id;
        items[id][i].seq = i;
        if (mailbox_put(&shared, &items[id][i].msg) != MAILBOX_OK)
            abort();
    }
    return NULL;
}

/* Many senders, one polling receiver: every message arrives once, each sender's in its order,
 * and the receiver never sleeps with messages waiting (poll would then hang the test). */
static void test_many_senders(void)
{
    pthread_t t[SENDERS];
    int next[SENDERS] = {0}, got = 0, in_order = 1;

    CHECK(mailbox_init(&shared, 0, 1) == 0);
    for (int i = 0; i < SENDERS; i++)
        pthread_create(&t[i], NULL, sender, (void *)(intptr_t)i);
    while (got < SENDERS * PER_SENDER) {
        struct pollfd p = {.fd = mailbox_fd(&shared), .events = POLLIN};
        if (poll(&p, 1, 5000) != 1)
            break;
        mailbox_clear_fd(&shared);
        for (struct mailbox_msg *m; (m = mailbox_take_all(&shared)) != NULL;)
            for (; m != NULL; m = m->next, got++) {
                struct item *it = KN_CONTAINER_OF(m, struct item, msg);
                in_order &= it->seq == next[it->sender]++;
            }
    }
    for (int i = 0; i < SENDERS; i++)
        pthread_join(t[i], NULL);
    CHECK(got == SENDERS * PER_SENDER);
    CHECK(in_order);
    mailbox_dispose(&shared);
}

static struct mailbox blocking;

static void *closer(void *arg)
{
    (void)arg;
    struct timespec d = {0, 20 * 1000 * 1000};
    nanosleep(&d, NULL);
    mailbox_close(&blocking);
    return NULL;
}

/* A receiver blocked without a deadline is woken by close. */
static void test_close_wakes(void)
{
    pthread_t t;

    CHECK(mailbox_init(&blocking, 0, 0) == 0);
    pthread_create(&t, NULL, closer, NULL);
    CHECK(mailbox_wait(&blocking, NULL) == NULL);
    CHECK(mailbox_closed(&blocking));
    pthread_join(t, NULL);
    mailbox_dispose(&blocking);
}

int main(void)
{
    test_order_and_bound();
    test_fd_wakeups();
    test_many_senders();
    test_close_wakes();
    return unit_result();
}
