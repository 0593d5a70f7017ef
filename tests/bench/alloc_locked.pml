/* The allocation-map family in Promela: N threads x M operations, each atomic ("locked").
 *
 * The same family as tests/bench/allocmap.py (AllocMap(N, M)): thread i's
 * operation j is pkey_alloc, pkey_mprotect or pkey_free for j mod 3 = 0, 1, 2,
 * each one d_step, as under the mmap lock.  The map logic is the model's
 * (pkeyspec/keys.py): alloc takes the lowest zero bit (ffz) and sets it,
 * mprotect checks the bit, free clears it.  The assertion is the race's
 * exists clause negated: no key is owned by two threads at once.  Verdict:
 * never violated.
 *
 *   spin -a -DN=3 -DM=3 alloc_locked.pml && gcc -O2 -DSAFETY -o pan pan.c && ./pan -c0
 *
 * tests/bench/bench.py does that for each size (make bench).
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
	d_step { ffz(); map = map | (1 << k); assert_unowned(); owned[_pid] = k + 1 }
}

inline pkey_mprotect() {
	d_step { ok = (map >> (owned[_pid] - 1)) & 1 }   /* mm_pkey_is_allocated; no VMA to change */
}

inline pkey_free() {
	d_step { map = map & ~(1 << (owned[_pid] - 1)); owned[_pid] = 0 }
}

#include "alloc_ops.pml"
