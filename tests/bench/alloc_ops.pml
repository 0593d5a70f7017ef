/* Included by alloc_locked.pml and alloc_lockfree.pml: N threads, each
 * running operations 0..M-1 (alloc, mprotect, free, alloc, ...), straight-line
 * code so that the process's pc is the only per-thread control state. */

#ifndef LOCAL
#define LOCAL
#endif

#if M > 12
#error "M is at most 12"
#endif

active [N] proctype T() {
	LOCAL
	pkey_alloc();
#if M > 1
	pkey_mprotect();
#endif
#if M > 2
	pkey_free();
#endif
#if M > 3
	pkey_alloc();
#endif
#if M > 4
	pkey_mprotect();
#endif
#if M > 5
	pkey_free();
#endif
#if M > 6
	pkey_alloc();
#endif
#if M > 7
	pkey_mprotect();
#endif
#if M > 8
	pkey_free();
#endif
#if M > 9
	pkey_alloc();
#endif
#if M > 10
	pkey_mprotect();
#endif
#if M > 11
	pkey_free();
#endif
}
