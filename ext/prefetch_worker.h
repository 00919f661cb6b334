/* A worker thread that reads memory ranges handed to it, so that data another core is about to read
   comes from the shared cache instead of DRAM (the network's outputs, just written by inference and
   already evicted by the layers that ran after them).

   One job at a time: prefetch_submit() hands the ranges over and returns a ticket without waiting;
   prefetch_release(ticket) returns once the worker no longer reads them (withdrawing a job it has
   not started, stopping one it is on within 4 KiB), so the caller may free the memory after it.
   While a job is out, further submissions are declined (ticket 0). Without POSIX threads every
   submission is declined. */
#ifndef RUNTIME_PREFETCH_WORKER_H
#define RUNTIME_PREFETCH_WORKER_H
#include <stddef.h>
#include <stdint.h>

#define PREFETCH_MAX_RANGES 8

#if defined(__GNUC__) && (defined(__linux__) || defined(__APPLE__))
#include <pthread.h>

static pthread_mutex_t prefetch_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t prefetch_submitted = PTHREAD_COND_INITIALIZER;  /* the worker waits for a job */
static pthread_cond_t prefetch_finished = PTHREAD_COND_INITIALIZER;   /* release waits for the worker */
static const char* prefetch_starts[PREFETCH_MAX_RANGES];
static ptrdiff_t prefetch_lengths[PREFETCH_MAX_RANGES];
static int prefetch_count = 0;
static unsigned long prefetch_ticket = 0;  /* last ticket handed out */
static unsigned long prefetch_taken = 0;   /* last ticket the worker took (or that was withdrawn) */
static unsigned long prefetch_done = 0;    /* last ticket the worker is finished with */
static int prefetch_out = 0;               /* a ticket is out: submitted, not yet released */
static int prefetch_cancel = 0;            /* read by the worker without the lock */
static int prefetch_started = 0;
static int prefetch_fork_handlers = 0;
static volatile unsigned prefetch_sink;

/* Touch one byte of every 64-byte line; 0 when stopped by prefetch_release. */
static int prefetch_read(const char* p, ptrdiff_t n) {
    unsigned sink = 0;
    for (ptrdiff_t page = 0; page < n; page += 4096) {
        ptrdiff_t end = page + 4096 < n ? page + 4096 : n;
        if (__atomic_load_n(&prefetch_cancel, __ATOMIC_RELAXED)) return 0;
        for (ptrdiff_t i = page; i < end; i += 64) sink += *(const volatile unsigned char*) (p + i);
    }
    if (n > 0) sink += *(const volatile unsigned char*) (p + n - 1);
    prefetch_sink = sink;
    return 1;
}

static void* prefetch_main(void* arg) {
    const char* starts[PREFETCH_MAX_RANGES];
    ptrdiff_t lengths[PREFETCH_MAX_RANGES];
    (void) arg;
    for (;;) {
        unsigned long ticket;
        int n;
        pthread_mutex_lock(&prefetch_lock);
        while (prefetch_taken == prefetch_ticket) pthread_cond_wait(&prefetch_submitted, &prefetch_lock);
        ticket = prefetch_taken = prefetch_ticket;
        n = prefetch_count;
        for (int i = 0; i < n; i++) {
            starts[i] = prefetch_starts[i];
            lengths[i] = prefetch_lengths[i];
        }
        pthread_mutex_unlock(&prefetch_lock);
        for (int i = 0; i < n && prefetch_read(starts[i], lengths[i]); i++) {
        }
        pthread_mutex_lock(&prefetch_lock);
        prefetch_done = ticket;
        pthread_cond_broadcast(&prefetch_finished);
        pthread_mutex_unlock(&prefetch_lock);
    }
    return NULL;
}

/* fork() copies no threads: the child starts without a worker and with fresh synchronisation. */
static void prefetch_before_fork(void) { pthread_mutex_lock(&prefetch_lock); }
static void prefetch_after_fork_parent(void) { pthread_mutex_unlock(&prefetch_lock); }
static void prefetch_after_fork_child(void) {
    pthread_mutex_init(&prefetch_lock, NULL);
    pthread_cond_init(&prefetch_submitted, NULL);
    pthread_cond_init(&prefetch_finished, NULL);
    prefetch_taken = prefetch_done = prefetch_ticket;
    prefetch_out = 0;
    prefetch_cancel = 0;
    prefetch_started = 0;
}

static int prefetch_start_locked(void) {
    pthread_t thread;
    pthread_attr_t attr;
    int ok;
    if (!prefetch_fork_handlers) {
        if (pthread_atfork(prefetch_before_fork, prefetch_after_fork_parent, prefetch_after_fork_child) != 0) return 0;
        prefetch_fork_handlers = 1;
    }
    if (pthread_attr_init(&attr) != 0) return 0;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    ok = pthread_create(&thread, &attr, prefetch_main, NULL) == 0;
    pthread_attr_destroy(&attr);
    return ok;
}

static unsigned long prefetch_submit(const char* const* starts, const ptrdiff_t* lengths, int n) {
    unsigned long ticket = 0;
    if (n > PREFETCH_MAX_RANGES) n = PREFETCH_MAX_RANGES;
    pthread_mutex_lock(&prefetch_lock);
    if (!prefetch_out && (prefetch_started || (prefetch_started = prefetch_start_locked()))) {
        for (int i = 0; i < n; i++) {
            prefetch_starts[i] = starts[i];
            prefetch_lengths[i] = lengths[i];
        }
        prefetch_count = n;
        ticket = ++prefetch_ticket;
        prefetch_out = 1;
        pthread_cond_signal(&prefetch_submitted);
    }
    pthread_mutex_unlock(&prefetch_lock);
    return ticket;
}

static void prefetch_release(unsigned long ticket) {
    pthread_mutex_lock(&prefetch_lock);
    if (ticket != 0 && prefetch_out && ticket == prefetch_ticket) {
        if (prefetch_taken != ticket) {
            prefetch_taken = prefetch_done = ticket;  /* not started: withdrawn */
        } else if (prefetch_done != ticket) {
            __atomic_store_n(&prefetch_cancel, 1, __ATOMIC_RELAXED);
            while (prefetch_done != ticket) pthread_cond_wait(&prefetch_finished, &prefetch_lock);
            __atomic_store_n(&prefetch_cancel, 0, __ATOMIC_RELAXED);
        }
        prefetch_out = 0;
    }
    pthread_mutex_unlock(&prefetch_lock);
}
#else
static unsigned long prefetch_submit(const char* const* starts, const ptrdiff_t* lengths, int n) {
    (void) starts; (void) lengths; (void) n;
    return 0;
}
static void prefetch_release(unsigned long ticket) { (void) ticket; }
#endif
#endif
