/* thread.h — helper threads of a daemon: started with every signal blocked, and their condition
 * variables on the monotonic clock.
 *
 * A thread inherits its creator's signal mask. The daemon takes its signals through a signalfd
 * (http/daemon.h), so no other thread may ever run a handler or absorb a SIGTERM; a thread
 * started before the daemon blocks them would. thread_start blocks every signal around
 * pthread_create and restores the caller's mask, so the new thread starts (and stays) with all
 * signals blocked whatever its creator's mask was. Timed waits measure deadlines on
 * CLOCK_MONOTONIC (immune to clock changes): initialise such condition variables with
 * thread_cond_init. */
#ifndef AGORA_CORE_THREAD_H
#define AGORA_CORE_THREAD_H

#include <pthread.h>

/* pthread_create(tid, NULL, fn, arg) with every signal blocked in the new thread. Returns 0 or
 * pthread_create's error number. */
int thread_start(pthread_t *tid, void *(*fn)(void *), void *arg);

/* pthread_cond_init with CLOCK_MONOTONIC for pthread_cond_timedwait's deadlines. */
void thread_cond_init(pthread_cond_t *cv);

#endif
