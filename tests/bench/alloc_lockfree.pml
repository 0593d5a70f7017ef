/* The allocation-map family in Promela, "lock-free": pkey_alloc split in two.
 *
 * As alloc_locked.pml, but pkey_alloc is an unlocked read of the map (the
 * lowest zero bit, kept in the thread's local cand) followed by a locked set
 * of that bit (AllocMap(N, M, lockfree=True) in tests/bench/allocmap.py).  Two
 * threads can read the same free key and both set it.  Verdict: the
 * assertion (no key owned by two threads at once) is violated.
 *
 *   spin -a -DN=3 -DM=3 alloc_lockfree.pml && gcc -O2 -DSAFETY -o pan pan.c && ./pan -c0
 */

#ifndef N
#define N 2
#endif
#ifndef M
#define M 3
#endif

int map = 1;            /* the allocation map: key 0 is allocated when the mm is created */
byte owned[N];          /* 1 + the key each thread owns; 0: none */
hidden byte k;          /* scratch, only used inside one d_step: not part of the state */
hidden byte u;
hidden byte ok;

inline ffz() {
	k = 0;
	do
	:: map & (1 << k) -> k++
	:: else -> break
	od
}

inline assert_unowned() {
	u = 0;
	do
	:: u < N -> assert(owned[u] != k + 1); u++
	:: else -> break
	od
}

inline pkey_alloc() {
	d_step { ffz(); cand = k + 1 };                                   /* unlocked read */
	d_step { k = cand - 1; map = map | (1 << k); assert_unowned(); owned[_pid] = cand; cand = 0 }
}

inline pkey_mprotect() {
	d_step { ok = (map >> (owned[_pid] - 1)) & 1 }
}

inline pkey_free() {
	d_step { map = map & ~(1 << (owned[_pid] - 1)); owned[_pid] = 0 }
}

#define LOCAL byte cand = 0;
#include "alloc_ops.pml"
