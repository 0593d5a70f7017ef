/*
 * runner.c: the real-kernel executor of the pkeyspec conformance scenarios.
 *
 * Built static (gcc -static -pthread -mno-red-zone) and put into an
 * initramfs with the scenario files under /scenarios.  It runs every
 * scenario of every *.scn file (files sorted by name, scenarios in file
 * order), each in a forked child, and prints one JSON line per named result
 * on stdout (the serial console), prefixed with "@@PKS ".  The format of the
 * scenario files is described in the docstring of pkeyspec/conformance.py,
 * the model's executor, which parses the same files.
 *
 * Results are written into a file-backed MAP_SHARED area (/tmp/pks.shm), so
 * what a scenario recorded survives its crash, its forked children and its
 * execve (the runner re-executes itself with --continue).  The parent prints
 * the results after the scenario's process has ended, then how it ended.
 *
 * The interpreter's own data (stack, globals, the shared area) carry key 0:
 * a scenario must never leave key 0 denied between two operations.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>
#include <linux/io_uring.h>

#define MARK "@@PKS "
#define SHM_PATH "/tmp/pks.shm"
#define SCN_DIR "/scenarios"
#define DEBUGFS_INIT_PKRU "/sys/kernel/debug/x86/init_pkru"
#define MAXTOK 12
#define MAXSCN 512
#define XSAVE_PKRU_OFFSET 2688
#define XSAVE_XSTATE_BV_OFFSET 512
#define SCENARIO_TIMEOUT 20

/* ---- parsed scenarios (process-private, re-parsed after exec) ---------- */

struct op {
	const char *file;
	int line;
	char sel[48];  /* "" = main */
	char name[64]; /* "" = unnamed */
	char opname[32];
	int ntok;
	char *tok[MAXTOK];
};

struct scenario {
	char name[96];
	const char *file;
	int line;
	int only; /* 0 any, 1 pku, 2 nopku */
	int nops, cap;
	struct op *ops;
};

static struct scenario scns[MAXSCN];
static int nscns;

/* ---- the shared area ----------------------------------------------------- */

struct var {
	char name[64];
	int64_t val;
};
struct result {
	char name[64];
	char val[64];
};
struct worker {
	char name[64];
	int pid;       /* process the worker lives in */
	int tid;
	int is_proc;   /* a forked child's main thread */
	int owner;     /* worker index of the process that forked it (for waitpid) */
	volatile int cmd, done, op;
	volatile int dead, status;
};
struct handler {
	char name[48];
	int is_asm;
	uint32_t asm_pkru;
	int rec_pkru, rec_code, rec_pkey, rec_err, rec_frame, rec_xbv, rec_addr;
	int64_t addr_base;
	char addr_var[64];
	int frame_op; /* 0 none, 1 set bits, 2 clear bits, 3 assign */
	uint32_t frame_arg;
	int do_wrpkru;
	uint32_t wrpkru_val;
	int do_exit, exit_code;
	int clear_xbv;
	int calls;
	int rec_ss_flags;            /* ss_flags: record sigaltstack's old ss_flags */
	int do_sigaltstack;          /* sigaltstack=FLAGS: call sigaltstack({0, 0, FLAGS}) */
	uint32_t sigaltstack_flags;
};
struct shared {
	int nvars;
	struct var vars[256];
	int nres;
	struct result res[512];
	int nworkers;
	struct worker workers[24];
	int nhandlers;
	struct handler handlers[16];
	int debugfs_touched;
	char error[256];
};

static struct shared *S;
static struct scenario *cur;
static int sig_handler[65]; /* per process: signal -> handler index + 1 */
uint32_t asm_entry_pkru[65], asm_pkru[65]; /* read by asm_handler */
static const unsigned char RET42[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3};

/* ---- small helpers ------------------------------------------------------- */

static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (S) {
		vsnprintf(S->error, sizeof S->error, fmt, ap);
	} else {
		char buf[256];
		vsnprintf(buf, sizeof buf, fmt, ap);
		printf(MARK "{\"error\": \"%s\"}\n", buf);
		fflush(stdout);
	}
	va_end(ap);
	syscall(SYS_exit_group, 125);
}

static inline uint32_t rdpkru(void)
{
	uint32_t eax, edx;
	asm volatile(".byte 0x0f,0x01,0xee" : "=a"(eax), "=d"(edx) : "c"(0));
	return eax;
}

static inline void wrpkru(uint32_t v)
{
	asm volatile(".byte 0x0f,0x01,0xef" ::"a"(v), "c"(0), "d"(0) : "memory");
}

static const char *errname(int e)
{
	static char buf[16];
	switch (e) {
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case ESRCH: return "ESRCH";
	case EINTR: return "EINTR";
	case EIO: return "EIO";
	case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EEXIST: return "EEXIST";
	case EINVAL: return "EINVAL";
	case ENOSPC: return "ENOSPC";
	case ENOSYS: return "ENOSYS";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case ERANGE: return "ERANGE";
	}
	snprintf(buf, sizeof buf, "E%d", e);
	return buf;
}

static const char *signame(int s)
{
	static char buf[16];
	switch (s) {
	case SIGILL: return "SIGILL";
	case SIGKILL: return "SIGKILL";
	case SIGUSR1: return "SIGUSR1";
	case SIGSEGV: return "SIGSEGV";
	case SIGUSR2: return "SIGUSR2";
	case SIGBUS: return "SIGBUS";
	case SIGTRAP: return "SIGTRAP";
	case SIGABRT: return "SIGABRT";
	}
	snprintf(buf, sizeof buf, "SIG%d", s);
	return buf;
}

static const char *sicode_name(int sig, int code)
{
	static char buf[16];
	if (code == SI_KERNEL) return "SI_KERNEL";
	if (code == SI_USER) return "SI_USER";
	if (code == SI_TKILL) return "SI_TKILL";
	if (sig == SIGSEGV) {
		switch (code) {
		case 1: return "SEGV_MAPERR";
		case 2: return "SEGV_ACCERR";
		case 3: return "SEGV_BNDERR";
		case 4: return "SEGV_PKUERR";
		}
	}
	if (sig == SIGILL) {
		switch (code) {
		case 1: return "ILL_ILLOPC";
		case 2: return "ILL_ILLOPN";
		}
	}
	snprintf(buf, sizeof buf, "%d", code);
	return buf;
}

/* ---- results and variables ---------------------------------------------- */

static void record(const char *name, const char *fmt, ...)
{
	struct result *r = NULL;
	for (int i = 0; i < S->nres; i++)
		if (!strcmp(S->res[i].name, name)) r = &S->res[i];
	if (!r) {
		if (S->nres >= (int)(sizeof S->res / sizeof S->res[0])) return;
		r = &S->res[S->nres];
		snprintf(r->name, sizeof r->name, "%s", name);
		__atomic_store_n(&S->nres, S->nres + 1, __ATOMIC_SEQ_CST);
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->val, sizeof r->val, fmt, ap);
	va_end(ap);
}

static void setvar(const char *name, int64_t v)
{
	for (int i = 0; i < S->nvars; i++)
		if (!strcmp(S->vars[i].name, name)) {
			S->vars[i].val = v;
			return;
		}
	if (S->nvars >= 256) fail("too many variables");
	snprintf(S->vars[S->nvars].name, 64, "%s", name);
	S->vars[S->nvars].val = v;
	S->nvars++;
}

static int getvar(const char *name, int64_t *v)
{
	for (int i = 0; i < S->nvars; i++)
		if (!strcmp(S->vars[i].name, name)) {
			*v = S->vars[i].val;
			return 1;
		}
	return 0;
}

/* ---- expressions: terms joined by | or +, left to right ----------------- */

struct cnst {
	const char *name;
	int64_t val;
};
static const struct cnst consts[] = {
	{"PROT_NONE", 0}, {"PROT_READ", 1}, {"PROT_WRITE", 2}, {"PROT_EXEC", 4},
	{"PROT_GROWSDOWN", 0x01000000}, {"RW", 3}, {"RX", 5}, {"RWX", 7},
	{"MAP_SHARED", 1}, {"MAP_PRIVATE", 2}, {"MAP_FIXED", 0x10}, {"MAP_ANONYMOUS", 0x20},
	{"MADV_NORMAL", 0}, {"MADV_DONTNEED", 4},
	{"AD", 1}, {"WD", 2}, {"PKEY_DISABLE_ACCESS", 1}, {"PKEY_DISABLE_WRITE", 2},
	{"PAGE", 4096},
	{"SIGILL", 4}, {"SIGUSR1", 10}, {"SIGSEGV", 11}, {"SIGUSR2", 12},
	{"SA_ONSTACK", 0x08000000}, {"SA_NODEFER", 0x40000000}, {"SA_RESETHAND", (int64_t)0x80000000},
	{"SS_DISABLE", 2},
	{"SS_ONSTACK", 1}, {"SS_AUTODISARM", (int64_t)0x80000000},
	{NULL, 0},
};

static int uring_const(const char *name, int64_t *val);

static int64_t eval_term(const struct op *o, const char *t, int len)
{
	char buf[80];
	if (len <= 0 || len >= (int)sizeof buf) fail("%s:%d: bad argument", o->file, o->line);
	memcpy(buf, t, len);
	buf[len] = 0;
	if (buf[0] == '$') {
		int64_t v = 0;
		if (!getvar(buf + 1, &v)) fail("%s:%d: unknown variable %s", o->file, o->line, buf);
		return v;
	}
	if (isdigit((unsigned char)buf[0]) || buf[0] == '-') {
		char *end;
		int64_t v;
		if (buf[0] == '-')
			v = -(int64_t)strtoull(buf + 1, &end, 0);
		else
			v = (int64_t)strtoull(buf, &end, 0);
		if (*end) fail("%s:%d: bad number %s", o->file, o->line, buf);
		return v;
	}
	for (const struct cnst *c = consts; c->name; c++)
		if (!strcmp(c->name, buf)) return c->val;
	int64_t uv;
	if (uring_const(buf, &uv)) return uv;
	fail("%s:%d: unknown name %s", o->file, o->line, buf);
	return 0;
}

static int64_t eval(const struct op *o, const char *s)
{
	int64_t acc = 0;
	char opch = 0;
	const char *p = s;
	for (;;) {
		const char *q = p;
		while (*q && *q != '|' && *q != '+') q++;
		int64_t v = eval_term(o, p, (int)(q - p));
		if (!opch)
			acc = v;
		else if (opch == '|')
			acc |= v;
		else
			acc += v;
		if (!*q) break;
		opch = *q;
		p = q + 1;
	}
	return acc;
}

static int64_t arg(const struct op *o, int i)
{
	if (i >= o->ntok) fail("%s:%d: %s needs more arguments", o->file, o->line, o->opname);
	return eval(o, o->tok[i]);
}

static int64_t arg_or(const struct op *o, int i, int64_t dflt)
{
	return i < o->ntok ? eval(o, o->tok[i]) : dflt;
}

/* ---- recording helpers for op results ------------------------------------ */

static int hidden(const struct op *o)
{
	return o->name[0] == 0 || o->name[0] == '_';
}

/* An integer result: the value, or the errno of a failed call. */
static void res_int(const struct op *o, long ret, int err)
{
	if (o->name[0]) setvar(o->name, ret);
	if (ret == -1 && err) {
		if (o->name[0]) record(o->name, "%s", errname(err));
		return;
	}
	if (!hidden(o)) record(o->name, "%ld", ret);
}

static void res_hex(const struct op *o, uint64_t v)
{
	if (o->name[0]) setvar(o->name, (int64_t)v);
	if (!hidden(o)) record(o->name, "0x%llx", (unsigned long long)v);
}

/* An address or descriptor: kept as a variable, reported only as "ok". */
static void res_addr(const struct op *o, long ret, int err)
{
	if (o->name[0]) setvar(o->name, ret);
	if (ret == -1 && err) {
		if (o->name[0]) record(o->name, "%s", errname(err));
		return;
	}
	if (!hidden(o)) record(o->name, "ok");
}

static void res_str(const struct op *o, const char *s)
{
	if (!hidden(o)) record(o->name, "%s", s);
}

/* ---- /proc/self/smaps ----------------------------------------------------- */

struct smaps_vma {
	unsigned long lo, hi;
	char perms[8];
	char path[64];
	int pkey; /* -1: no ProtectionKey line */
};

static int read_smaps(struct smaps_vma *v, int max)
{
	static char buf[1 << 17];
	int fd = open("/proc/self/smaps", O_RDONLY);
	if (fd < 0) fail("open smaps: %s", errname(errno));
	size_t n = 0;
	ssize_t r;
	while ((r = read(fd, buf + n, sizeof buf - 1 - n)) > 0) n += r;
	close(fd);
	buf[n] = 0;
	int count = 0;
	char *line = buf;
	while (*line) {
		char *nl = strchr(line, '\n');
		if (nl) *nl = 0;
		unsigned long lo, hi;
		char perms[8], path[64];
		int consumed = 0;
		if (sscanf(line, "%lx-%lx %7s %*s %*s %*s%n", &lo, &hi, perms, &consumed) == 3 && count < max) {
			path[0] = 0;
			sscanf(line + consumed, " %63s", path);
			v[count].lo = lo;
			v[count].hi = hi;
			snprintf(v[count].perms, 8, "%s", perms);
			snprintf(v[count].path, 64, "%s", path);
			v[count].pkey = -1;
			count++;
		} else if (!strncmp(line, "ProtectionKey:", 14) && count > 0) {
			v[count - 1].pkey = atoi(line + 14);
		}
		if (!nl) break;
		line = nl + 1;
	}
	return count;
}

static void res_pkey(const struct op *o, int pkey, int found)
{
	if (!found || pkey < 0) {
		if (o->name[0]) setvar(o->name, -1);
		res_str(o, found ? "absent" : "no-vma");
	} else {
		if (o->name[0]) setvar(o->name, pkey);
		if (!hidden(o)) record(o->name, "%d", pkey);
	}
}

/* ---- signal handlers ------------------------------------------------------- */

void c_handler(int sig, siginfo_t *si, void *ucv);

/* The assembly entry: no stack access before WRPKRU.  It saves the entry
 * PKRU, loads the handler's PKRU, then jumps to the C body. */
void asm_handler(int, siginfo_t *, void *);
asm(".text\n"
    ".globl asm_handler\n"
    "asm_handler:\n"
    "  mov %rdx, %r11\n"
    "  lea asm_entry_pkru(%rip), %r10\n"
    "  xor %ecx, %ecx\n"
    "  .byte 0x0f,0x01,0xee\n"
    "  mov %eax, (%r10,%rdi,4)\n"
    "  lea asm_pkru(%rip), %r10\n"
    "  mov (%r10,%rdi,4), %eax\n"
    "  xor %ecx, %ecx\n"
    "  xor %edx, %edx\n"
    "  .byte 0x0f,0x01,0xef\n"
    "  mov %r11, %rdx\n"
    "  jmp c_handler\n");

static void hrecord(struct handler *h, const char *field, const char *fmt, ...)
{
	char name[64], val[64];
	va_list ap;
	snprintf(name, sizeof name, "%s.%s", h->name, field);
	va_start(ap, fmt);
	vsnprintf(val, sizeof val, fmt, ap);
	va_end(ap);
	record(name, "%s", val);
}

__attribute__((used)) void c_handler(int sig, siginfo_t *si, void *ucv)
{
	ucontext_t *uc = ucv;
	int idx = sig_handler[sig] - 1;
	if (idx < 0) syscall(SYS_exit_group, 124);
	struct handler *h = &S->handlers[idx];
	h->calls++;
	hrecord(h, "calls", "%d", h->calls);
	if (h->rec_pkru) hrecord(h, "pkru", "0x%x", h->is_asm ? asm_entry_pkru[sig] : rdpkru());
	if (h->rec_code) hrecord(h, "si_code", "%s", sicode_name(sig, si->si_code));
	if (h->rec_pkey) {
		if (si->si_code == 4 && sig == SIGSEGV)
			hrecord(h, "si_pkey", "%u", si->si_pkey);
		else
			hrecord(h, "si_pkey", "none");
	}
	if (h->rec_err) hrecord(h, "err", "0x%llx", (unsigned long long)uc->uc_mcontext.gregs[REG_ERR]);
	if (h->rec_addr) {
		long off = (long)si->si_addr - (long)h->addr_base;
		if (off >= 0 && off < (1 << 20))
			hrecord(h, "si_addr", "$%s+0x%lx", h->addr_var, off);
		else
			hrecord(h, "si_addr", "other");
	}
	char *fp = (char *)uc->uc_mcontext.fpregs;
	if (h->rec_frame) hrecord(h, "frame_pkru", "0x%x", *(uint32_t *)(fp + XSAVE_PKRU_OFFSET));
	if (h->rec_xbv)
		hrecord(h, "xstate_bv9", "%s",
			(*(uint64_t *)(fp + XSAVE_XSTATE_BV_OFFSET) >> 9) & 1 ? "yes" : "no");
	if (h->frame_op) {
		uint32_t *p = (uint32_t *)(fp + XSAVE_PKRU_OFFSET);
		if (h->frame_op == 1) *p |= h->frame_arg;
		if (h->frame_op == 2) *p &= ~h->frame_arg;
		if (h->frame_op == 3) *p = h->frame_arg;
	}
	if (h->clear_xbv) *(uint64_t *)(fp + XSAVE_XSTATE_BV_OFFSET) &= ~(1ULL << 9);
	if (h->rec_ss_flags) {
		stack_t old;
		memset(&old, 0, sizeof old);
		syscall(SYS_sigaltstack, NULL, &old);
		hrecord(h, "ss_flags", "0x%x", (unsigned)old.ss_flags);
	}
	if (h->do_sigaltstack) {
		stack_t ss = {NULL, (int)h->sigaltstack_flags, 0};
		errno = 0;
		long r = syscall(SYS_sigaltstack, &ss, NULL);
		if (r == -1)
			hrecord(h, "sigaltstack", "%s", errname(errno));
		else
			hrecord(h, "sigaltstack", "%ld", r);
	}
	if (h->do_wrpkru) wrpkru(h->wrpkru_val);
	if (h->do_exit) syscall(SYS_exit_group, h->exit_code);
}

/* handler NAME opt...: pkru si_code si_pkey err frame xstate_bv9 addr=VAR
 * clear_xstate_bv9 asm=PKRU frame_set=BITS frame_clear=BITS frame=VALUE wrpkru=VALUE exit=N
 * ss_flags sigaltstack=FLAGS */
static void op_handler(const struct op *o)
{
	if (o->ntok < 1) fail("%s:%d: handler needs a name", o->file, o->line);
	if (S->nhandlers >= 16) fail("too many handlers");
	struct handler *h = &S->handlers[S->nhandlers];
	memset(h, 0, sizeof *h);
	snprintf(h->name, sizeof h->name, "%s", o->tok[0]);
	for (int i = 1; i < o->ntok; i++) {
		char *t = o->tok[i];
		char *eq = strchr(t, '=');
		const char *v = eq ? eq + 1 : NULL;
		size_t kl = eq ? (size_t)(eq - t) : strlen(t);
#define KEY(s) (kl == strlen(s) && !strncmp(t, s, kl))
		if (KEY("pkru")) h->rec_pkru = 1;
		else if (KEY("si_code")) h->rec_code = 1;
		else if (KEY("si_pkey")) h->rec_pkey = 1;
		else if (KEY("err")) h->rec_err = 1;
		else if (KEY("frame_pkru")) h->rec_frame = 1;
		else if (KEY("xstate_bv9")) h->rec_xbv = 1;
		else if (KEY("clear_xstate_bv9")) h->clear_xbv = 1;
		else if (KEY("addr") && v) {
			h->rec_addr = 1;
			snprintf(h->addr_var, sizeof h->addr_var, "%s", v);
			if (!getvar(v, &h->addr_base)) fail("%s:%d: unknown variable %s", o->file, o->line, v);
		} else if (KEY("asm") && v) { h->is_asm = 1; h->asm_pkru = (uint32_t)eval(o, v); }
		else if (KEY("frame_set") && v) { h->frame_op = 1; h->frame_arg = (uint32_t)eval(o, v); }
		else if (KEY("frame_clear") && v) { h->frame_op = 2; h->frame_arg = (uint32_t)eval(o, v); }
		else if (KEY("frame") && v) { h->frame_op = 3; h->frame_arg = (uint32_t)eval(o, v); }
		else if (KEY("wrpkru") && v) { h->do_wrpkru = 1; h->wrpkru_val = (uint32_t)eval(o, v); }
		else if (KEY("exit") && v) { h->do_exit = 1; h->exit_code = (int)eval(o, v); }
		else if (KEY("ss_flags")) h->rec_ss_flags = 1;
		else if (KEY("sigaltstack") && v) {
			h->do_sigaltstack = 1;
			h->sigaltstack_flags = (uint32_t)eval(o, v);
		}
		else fail("%s:%d: unknown handler option %s", o->file, o->line, t);
#undef KEY
	}
	S->nhandlers++;
}

static int find_handler(const char *name)
{
	for (int i = 0; i < S->nhandlers; i++)
		if (!strcmp(S->handlers[i].name, name)) return i;
	return -1;
}

/* ---- workers: threads and forked children ------------------------------------ */

static void worker_loop(int idx);
static void exec_op(int i, int self);

static int find_worker(const struct op *o, const char *name)
{
	for (int i = 0; i < S->nworkers; i++)
		if (!strcmp(S->workers[i].name, name)) return i;
	fail("%s:%d: unknown thread or process @%s", o->file, o->line, name);
	return -1;
}

static void *thread_main(void *p)
{
	int idx = (int)(long)p;
	S->workers[idx].tid = (int)syscall(SYS_gettid);
	S->workers[idx].pid = getpid();
	worker_loop(idx);
	return NULL;
}

static void worker_loop(int idx)
{
	struct worker *w = &S->workers[idx];
	int seen = 0; /* cmd starts at 0; the first command may already be there */
	for (;;) {
		int c;
		while ((c = __atomic_load_n(&w->cmd, __ATOMIC_SEQ_CST)) == seen) sched_yield();
		seen = c;
		exec_op(w->op, idx);
		__atomic_store_n(&w->done, seen, __ATOMIC_SEQ_CST);
	}
}

static int new_worker(const struct op *o, int is_proc, int owner)
{
	if (!o->name[0]) fail("%s:%d: %s needs a name", o->file, o->line, o->opname);
	if (S->nworkers >= 24) fail("too many workers");
	int idx = S->nworkers;
	struct worker *w = &S->workers[idx];
	memset((void *)w, 0, sizeof *w);
	snprintf(w->name, sizeof w->name, "%s", o->name);
	w->is_proc = is_proc;
	w->owner = owner;
	S->nworkers++;
	return idx;
}

/* Send op i to worker idx and wait until it is done (or its process ended). */
static void dispatch(int i, int idx)
{
	struct worker *w = &S->workers[idx];
	if (w->dead) {
		if (cur->ops[i].name[0]) record(cur->ops[i].name, "dead");
		return;
	}
	w->op = i;
	int c = __atomic_add_fetch(&w->cmd, 1, __ATOMIC_SEQ_CST);
	int polls = 0;
	while (__atomic_load_n(&w->done, __ATOMIC_SEQ_CST) != c) {
		if (w->pid != getpid() && (++polls & 15) == 0) {
			int st;
			if (waitpid(w->pid, &st, WNOHANG) == w->pid) {
				for (int j = 0; j < S->nworkers; j++)
					if (S->workers[j].pid == w->pid) {
						S->workers[j].dead = 1;
						S->workers[j].status = st;
					}
				return;
			}
		}
		sched_yield();
	}
}

static void end_string(char *buf, size_t n, int st)
{
	if (WIFEXITED(st))
		snprintf(buf, n, "exited %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, n, "killed %s", signame(WTERMSIG(st)));
	else
		snprintf(buf, n, "status 0x%x", st);
}

/* ---- misc ops ---------------------------------------------------------------- */

static int cpu_has_pku(int *ospke)
{
	unsigned a = 7, b, c = 0, d;
	asm volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	if (ospke) *ospke = (c >> 4) & 1;
	return (c >> 3) & 1;
}

static int cpuinfo_has(const char *flag)
{
	static char buf[1 << 15];
	int fd = open("/proc/cpuinfo", O_RDONLY);
	if (fd < 0) return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0) return 0;
	buf[n] = 0;
	char *l = strstr(buf, "\nflags");
	if (!l) return 0;
	char *e = strchr(l + 1, '\n');
	if (e) *e = 0;
	char pat[40];
	snprintf(pat, sizeof pat, " %s", flag);
	for (char *p = l; (p = strstr(p, pat)); p++)
		if (p[strlen(pat)] == 0 || p[strlen(pat)] == ' ') return 1;
	return 0;
}

/* WRPKRU(v), one push/pop on the stack, WRPKRU(old): nothing else touches memory. */
static void touch_stack_with_pkru(uint32_t v)
{
	uint32_t old = rdpkru();
	asm volatile("mov %0, %%eax\n\t"
		     "xor %%ecx, %%ecx\n\t"
		     "xor %%edx, %%edx\n\t"
		     ".byte 0x0f,0x01,0xef\n\t"
		     "push %%rax\n\t"
		     "pop %%rax\n\t"
		     "mov %1, %%eax\n\t"
		     "xor %%ecx, %%ecx\n\t"
		     "xor %%edx, %%edx\n\t"
		     ".byte 0x0f,0x01,0xef\n\t"
		     :
		     : "r"(v), "r"(old)
		     : "rax", "rcx", "rdx", "memory");
}

/* WRPKRU(v), tgkill(pid, tid, sig), WRPKRU(old): nothing touches memory between the two
 * WRPKRUs, so the signal is delivered (on the way out of tgkill) to a thread whose PKRU is v.
 * Returns the raw system call result (-errno on failure). */
static long raise_with_pkru(uint32_t v, long sig)
{
	uint32_t old = rdpkru();
	long pid = getpid(), tid = syscall(SYS_gettid), ret;
	asm volatile("mov %[v], %%eax\n\t"
		     "xor %%ecx, %%ecx\n\t"
		     "xor %%edx, %%edx\n\t"
		     ".byte 0x0f,0x01,0xef\n\t"
		     "mov %[nr], %%eax\n\t"
		     "mov %[pid], %%rdi\n\t"
		     "mov %[tid], %%rsi\n\t"
		     "mov %[sig], %%rdx\n\t"
		     "syscall\n\t"
		     "mov %%rax, %%r8\n\t"
		     "mov %[old], %%eax\n\t"
		     "xor %%ecx, %%ecx\n\t"
		     "xor %%edx, %%edx\n\t"
		     ".byte 0x0f,0x01,0xef\n\t"
		     "mov %%r8, %[ret]\n\t"
		     : [ret] "=&r"(ret)
		     : [v] "r"(v), [old] "r"(old), [nr] "i"(SYS_tgkill), [pid] "r"(pid),
		       [tid] "r"(tid), [sig] "r"(sig)
		     : "rax", "rcx", "rdx", "rdi", "rsi", "r8", "r11", "memory");
	return ret;
}

static void do_exec(int next_op)
{
	char a1[16], a2[16];
	int si = (int)(cur - scns);
	snprintf(a1, sizeof a1, "%d", si);
	snprintf(a2, sizeof a2, "%d", next_op);
	char *argv[] = {"/runner", "--continue", a1, a2, NULL};
	char *envp[] = {NULL};
	syscall(SYS_execve, "/proc/self/exe", argv, envp);
	fail("execve: %s", errname(errno));
}

/* ---- io_uring, through raw system calls (no liburing) --------------------------
 *
 * uring_setup ENTRIES [FLAGS]: io_uring_setup, then mmap of the SQ ring, the CQ
 * ring and the SQE array; the result is the ring's fd (reported as "ok").
 * uring_submit RING OPCODE FD ADDR LEN [SQE_FLAGS]: one SQE (off = -1, the
 * file's current position), io_uring_enter(to_submit 1, min_complete 1,
 * GETEVENTS), then the CQE's res: a byte count or an errno name.  An fd that
 * uring_setup did not make is passed to io_uring_enter as it is, so the result
 * is the kernel's errno for it (EBADF, EOPNOTSUPP).  With SQPOLL the kernel
 * thread submits: to_submit is 0 and IORING_ENTER_SQ_WAKEUP wakes it.
 * uring_close RING: munmap of the rings, then close (a plain close leaves the
 * ring alive: the mappings hold it).
 *
 * After each completion the runner sleeps 20 ms, so that an io-wq worker that
 * posted the CQE has gone back to its idle list before the next operation:
 * the next punted request then goes to that worker, not to a new one.  The ring
 * memory carries key 0; the rings live in this process (not the shared area).
 */

struct uring {
	int fd, sqpoll;
	void *maps[3];
	size_t lens[3];
	unsigned *sq_tail, *sq_mask, *sq_array;
	unsigned *cq_head, *cq_tail, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};
static struct uring rings[8];
static int nrings;

static const struct cnst uring_consts[] = {
	{"IORING_SETUP_SQPOLL", 2}, {"IORING_OP_READ", 22}, {"IORING_OP_WRITE", 23},
	{"IOSQE_ASYNC", 16},
	{NULL, 0},
};

_Static_assert(IORING_SETUP_SQPOLL == 2 && IORING_OP_READ == 22 && IORING_OP_WRITE == 23 &&
	       IOSQE_ASYNC == 16, "uring_consts must hold the values of <linux/io_uring.h>");

static int uring_const(const char *name, int64_t *val)
{
	for (const struct cnst *c = uring_consts; c->name; c++)
		if (!strcmp(c->name, name)) {
			*val = c->val;
			return 1;
		}
	return 0;
}

static long uring_setup(unsigned entries, unsigned flags)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof p);
	p.flags = flags;
	long fd = syscall(__NR_io_uring_setup, entries, &p);
	if (fd < 0) return -errno;
	if (nrings >= (int)(sizeof rings / sizeof rings[0])) fail("too many rings");
	size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (p.features & IORING_FEAT_SINGLE_MMAP) sq_len = cq_len = sq_len > cq_len ? sq_len : cq_len;
	char *sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
			IORING_OFF_SQ_RING);
	char *cq = sq;
	if (sq != MAP_FAILED && !(p.features & IORING_FEAT_SINGLE_MMAP))
		cq = mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
			  IORING_OFF_CQ_RING);
	void *sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED)
		fail("mmap of the io_uring rings: %s", errname(errno));
	struct uring *u = &rings[nrings++];
	u->fd = (int)fd;
	u->maps[0] = sq;
	u->lens[0] = sq_len;
	u->maps[1] = cq == sq ? NULL : cq;
	u->lens[1] = cq_len;
	u->maps[2] = sqes;
	u->lens[2] = p.sq_entries * sizeof(struct io_uring_sqe);
	u->sqpoll = !!(flags & IORING_SETUP_SQPOLL);
	u->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	u->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	u->sq_array = (unsigned *)(sq + p.sq_off.array);
	u->cq_head = (unsigned *)(cq + p.cq_off.head);
	u->cq_tail = (unsigned *)(cq + p.cq_off.tail);
	u->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	u->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	u->sqes = sqes;
	return fd;
}

/* Submit one SQE and wait for its CQE: the CQE's res, or -errno of io_uring_enter. */
static long uring_submit(int fd, unsigned opcode, int file, uint64_t addr, unsigned len,
			 unsigned sqe_flags)
{
	struct uring *u = NULL;
	for (int i = 0; i < nrings; i++)
		if (rings[i].fd == fd) u = &rings[i];
	if (!u) {
		long r = syscall(__NR_io_uring_enter, fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0);
		return r < 0 ? -errno : r;
	}
	unsigned tail = *u->sq_tail, idx = tail & *u->sq_mask;
	struct io_uring_sqe *sqe = &u->sqes[idx];
	memset(sqe, 0, sizeof *sqe);
	sqe->opcode = (uint8_t)opcode;
	sqe->flags = (uint8_t)sqe_flags;
	sqe->fd = file;
	sqe->off = (uint64_t)-1;
	sqe->addr = addr;
	sqe->len = len;
	sqe->user_data = 0x5eed;
	u->sq_array[idx] = idx;
	__atomic_store_n(u->sq_tail, tail + 1, __ATOMIC_RELEASE);
	unsigned head = *u->cq_head;
	unsigned enter_flags = IORING_ENTER_GETEVENTS | (u->sqpoll ? IORING_ENTER_SQ_WAKEUP : 0);
	int submitted = u->sqpoll;
	for (int tries = 0; __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE) == head; tries++) {
		if (tries == 1000) fail("io_uring: no completion");
		long r = syscall(__NR_io_uring_enter, fd, submitted ? 0 : 1, 1, enter_flags, NULL, 0);
		if (r > 0) submitted = 1;
		if (r < 0 && errno != EINTR && errno != EAGAIN && errno != EBUSY) return -errno;
	}
	long res = u->cqes[head & *u->cq_mask].res;
	__atomic_store_n(u->cq_head, head + 1, __ATOMIC_RELEASE);
	usleep(20000);
	return res;
}

/* munmap the rings and close the fd: the ring goes away only when both are gone.  The
 * kernel then removes it from every task that used it (io_ring_exit_work queues task
 * work to them); the 50 ms sleep lets that happen before the next operation. */
static long uring_close(int fd)
{
	for (int i = 0; i < nrings; i++) {
		if (rings[i].fd != fd) continue;
		for (int m = 0; m < 3; m++)
			if (rings[i].maps[m]) munmap(rings[i].maps[m], rings[i].lens[m]);
		rings[i] = rings[--nrings];
		break;
	}
	long r = close(fd) ? -errno : 0;
	usleep(50000);
	return r;
}

static int uring_op(const struct op *o)
{
	const char *op = o->opname;
	if (!strcmp(op, "uring_setup")) {
		long r = uring_setup((unsigned)arg(o, 0), (unsigned)arg_or(o, 1, 0));
		res_addr(o, r < 0 ? -1 : r, r < 0 ? (int)-r : 0);
	} else if (!strcmp(op, "uring_close")) {
		long r = uring_close((int)arg(o, 0));
		res_int(o, r < 0 ? -1 : r, r < 0 ? (int)-r : 0);
	} else if (!strcmp(op, "uring_submit")) {
		long r = uring_submit((int)arg(o, 0), (unsigned)arg(o, 1), (int)arg(o, 2),
				      (uint64_t)arg(o, 3), (unsigned)arg(o, 4), (unsigned)arg_or(o, 5, 0));
		res_int(o, r < 0 ? -1 : r, r < 0 ? (int)-r : 0);
	} else {
		return 0;
	}
	return 1;
}

/* ---- the interpreter ---------------------------------------------------------- */

static void exec_op(int i, int self)
{
	const struct op *o = &cur->ops[i];
	const char *op = o->opname;
	long r;
	int e;
#define SYS(...) do { errno = 0; r = syscall(__VA_ARGS__); e = errno; } while (0)
	if (!strcmp(op, "mmap")) {
		SYS(SYS_mmap, arg(o, 0), arg(o, 1), arg(o, 2), arg(o, 3), -1, 0);
		res_addr(o, r, e);
	} else if (!strcmp(op, "munmap")) {
		SYS(SYS_munmap, arg(o, 0), arg(o, 1));
		res_int(o, r, e);
	} else if (!strcmp(op, "mprotect")) {
		SYS(SYS_mprotect, arg(o, 0), arg(o, 1), arg(o, 2));
		res_int(o, r, e);
	} else if (!strcmp(op, "pkey_mprotect")) {
		SYS(SYS_pkey_mprotect, arg(o, 0), arg(o, 1), arg(o, 2), arg(o, 3));
		res_int(o, r, e);
	} else if (!strcmp(op, "pkey_alloc")) {
		SYS(SYS_pkey_alloc, arg(o, 0), arg(o, 1));
		res_int(o, r, e);
	} else if (!strcmp(op, "pkey_free")) {
		SYS(SYS_pkey_free, arg(o, 0));
		res_int(o, r, e);
	} else if (!strcmp(op, "madvise")) {
		SYS(SYS_madvise, arg(o, 0), arg(o, 1), arg(o, 2));
		res_int(o, r, e);
	} else if (!strcmp(op, "glibc_pkey_alloc")) {
		errno = 0;
		r = pkey_alloc((unsigned)arg(o, 0), (unsigned)arg(o, 1));
		res_int(o, r, errno);
	} else if (!strcmp(op, "glibc_pkey_free")) {
		errno = 0;
		r = pkey_free((int)arg(o, 0));
		res_int(o, r, errno);
	} else if (!strcmp(op, "glibc_pkey_mprotect")) {
		errno = 0;
		r = pkey_mprotect((void *)arg(o, 0), arg(o, 1), (int)arg(o, 2), (int)arg(o, 3));
		res_int(o, r, errno);
	} else if (!strcmp(op, "pkey_get")) {
		errno = 0;
		r = pkey_get((int)arg(o, 0));
		res_int(o, r, errno);
	} else if (!strcmp(op, "pkey_set")) {
		errno = 0;
		r = pkey_set((int)arg(o, 0), (unsigned)arg(o, 1));
		res_int(o, r, errno);
	} else if (!strcmp(op, "rdpkru")) {
		res_hex(o, rdpkru());
	} else if (!strcmp(op, "wrpkru")) {
		wrpkru((uint32_t)arg(o, 0));
		res_str(o, "ok");
	} else if (!strcmp(op, "touch_stack_with_pkru")) {
		touch_stack_with_pkru((uint32_t)arg(o, 0));
		res_str(o, "ok");
	} else if (!strcmp(op, "load")) {
		int64_t a = arg(o, 0), size = arg_or(o, 1, 1);
		uint64_t v = 0;
		switch (size) {
		case 1: v = *(volatile uint8_t *)a; break;
		case 2: v = *(volatile uint16_t *)a; break;
		case 4: v = *(volatile uint32_t *)a; break;
		case 8: v = *(volatile uint64_t *)a; break;
		default: fail("%s:%d: bad size", o->file, o->line);
		}
		if (o->name[0]) setvar(o->name, (int64_t)v);
		if (!hidden(o)) record(o->name, "%llu", (unsigned long long)v);
	} else if (!strcmp(op, "store")) {
		int64_t a = arg(o, 0), v = arg(o, 1), size = arg_or(o, 2, 1);
		switch (size) {
		case 1: *(volatile uint8_t *)a = (uint8_t)v; break;
		case 2: *(volatile uint16_t *)a = (uint16_t)v; break;
		case 4: *(volatile uint32_t *)a = (uint32_t)v; break;
		case 8: *(volatile uint64_t *)a = (uint64_t)v; break;
		default: fail("%s:%d: bad size", o->file, o->line);
		}
		res_str(o, "ok");
	} else if (!strcmp(op, "write_code")) {
		volatile unsigned char *p = (volatile unsigned char *)arg(o, 0);
		for (unsigned k = 0; k < sizeof RET42; k++) p[k] = RET42[k];
		res_str(o, "ok");
	} else if (!strcmp(op, "call")) {
		int (*fn)(void) = (int (*)(void))arg(o, 0);
		int v = fn();
		if (o->name[0]) setvar(o->name, v);
		if (!hidden(o)) record(o->name, "%d", v);
	} else if (!strcmp(op, "smaps_pkey")) {
		struct smaps_vma v[256];
		int n = read_smaps(v, 256);
		unsigned long a = (unsigned long)arg(o, 0);
		int found = 0, pkey = -1;
		for (int k = 0; k < n; k++)
			if (v[k].lo <= a && a < v[k].hi) { found = 1; pkey = v[k].pkey; }
		res_pkey(o, pkey, found);
	} else if (!strcmp(op, "smaps_pkey_of")) {
		/* smaps_pkey_of stack|text: the [stack] VMA, or the first r-xp file mapping */
		struct smaps_vma v[256];
		int n = read_smaps(v, 256);
		int found = 0, pkey = -1;
		int want_stack = !strcmp(o->tok[0], "stack");
		for (int k = 0; k < n && !found; k++) {
			if (want_stack ? !strcmp(v[k].path, "[stack]")
				       : (v[k].perms[2] == 'x' && v[k].path[0] == '/')) {
				found = 1;
				pkey = v[k].pkey;
			}
		}
		res_pkey(o, pkey, found);
	} else if (!strcmp(op, "vma_count")) {
		struct smaps_vma v[256];
		int n = read_smaps(v, 256);
		unsigned long a = (unsigned long)arg(o, 0), len = (unsigned long)arg(o, 1);
		int count = 0;
		for (int k = 0; k < n; k++)
			if (v[k].lo < a + len && a < v[k].hi) count++;
		res_int(o, count, 0);
	} else if (!strcmp(op, "cpuinfo_has")) {
		res_str(o, cpuinfo_has(o->tok[0]) ? "yes" : "no");
	} else if (!strcmp(op, "cpuid")) {
		int ospke, pku = cpu_has_pku(&ospke);
		res_str(o, (!strcmp(o->tok[0], "pku") ? pku : ospke) ? "yes" : "no");
	} else if (!strcmp(op, "eq")) {
		res_str(o, arg(o, 0) == arg(o, 1) ? "yes" : "no");
	} else if (!strcmp(op, "bits")) {
		/* bits KEY RIGHTS: RIGHTS << 2*KEY, a PKRU mask */
		int64_t k = arg(o, 0), rr = arg(o, 1);
		res_hex(o, k < 0 || k > 15 ? 0 : (uint64_t)(rr << (2 * k)) & 0xffffffffu);
	} else if (!strcmp(op, "getpid")) {
		res_addr(o, getpid(), 0);
	} else if (!strcmp(op, "pipe")) {
		int fds[2];
		errno = 0;
		r = pipe2(fds, O_NONBLOCK);
		if (r == 0) {
			char n[80];
			snprintf(n, sizeof n, "%s.r", o->name);
			setvar(n, fds[0]);
			snprintf(n, sizeof n, "%s.w", o->name);
			setvar(n, fds[1]);
		}
		res_addr(o, r, errno);
	} else if (!strcmp(op, "read")) {
		SYS(SYS_read, arg(o, 0), arg(o, 1), arg(o, 2));
		res_int(o, r, e);
	} else if (!strcmp(op, "write")) {
		SYS(SYS_write, arg(o, 0), arg(o, 1), arg(o, 2));
		res_int(o, r, e);
	} else if (!strcmp(op, "close")) {
		SYS(SYS_close, arg(o, 0));
		res_int(o, r, e);
	} else if (!strcmp(op, "open_proc_mem")) {
		int64_t pid = arg_or(o, 0, 0);
		char path[64];
		if (pid)
			snprintf(path, sizeof path, "/proc/%ld/mem", (long)pid);
		else
			snprintf(path, sizeof path, "/proc/self/mem");
		SYS(SYS_open, path, O_RDWR);
		res_addr(o, r, e);
	} else if (!strcmp(op, "pread")) {
		SYS(SYS_pread64, arg(o, 0), arg(o, 1), arg(o, 2), arg(o, 3));
		res_int(o, r, e);
	} else if (!strcmp(op, "pwrite")) {
		SYS(SYS_pwrite64, arg(o, 0), arg(o, 1), arg(o, 2), arg(o, 3));
		res_int(o, r, e);
	} else if (!strcmp(op, "process_vm_readv") || !strcmp(op, "process_vm_writev")) {
		/* process_vm_readv PID LOCAL REMOTE LEN (one iovec each side) */
		struct iovec l = {(void *)arg(o, 1), (size_t)arg(o, 3)};
		struct iovec rm = {(void *)arg(o, 2), (size_t)arg(o, 3)};
		SYS(op[11] == 'r' ? SYS_process_vm_readv : SYS_process_vm_writev, arg(o, 0), &l, 1, &rm, 1, 0);
		res_int(o, r, e);
	} else if (!strcmp(op, "handler")) {
		op_handler(o);
	} else if (!strcmp(op, "sigaction")) {
		/* sigaction SIG HANDLER|SIG_DFL|SIG_IGN [FLAGS] */
		int sig = (int)arg(o, 0);
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_flags = (int)arg_or(o, 2, 0);
		if (o->ntok < 2) fail("%s:%d: sigaction SIG HANDLER [FLAGS]", o->file, o->line);
		if (!strcmp(o->tok[1], "SIG_DFL")) {
			sa.sa_handler = SIG_DFL;
		} else if (!strcmp(o->tok[1], "SIG_IGN")) {
			sa.sa_handler = SIG_IGN;
		} else {
			int h = find_handler(o->tok[1]);
			if (h < 0) fail("%s:%d: unknown handler %s", o->file, o->line, o->tok[1]);
			sig_handler[sig] = h + 1;
			asm_pkru[sig] = S->handlers[h].asm_pkru;
			sa.sa_sigaction = S->handlers[h].is_asm ? asm_handler : c_handler;
			sa.sa_flags |= SA_SIGINFO;
		}
		errno = 0;
		r = sigaction(sig, &sa, NULL);
		res_int(o, r, errno);
	} else if (!strcmp(op, "sigaltstack")) {
		/* sigaltstack ADDR SIZE [FLAGS] */
		stack_t ss = {(void *)arg(o, 0), (int)arg_or(o, 2, 0), (size_t)arg(o, 1)};
		SYS(SYS_sigaltstack, &ss, NULL);
		res_int(o, r, e);
	} else if (!strcmp(op, "sigaltstack_flags")) {
		/* sigaltstack_flags: the ss_flags sigaltstack(NULL, &old) reports */
		stack_t old;
		memset(&old, 0, sizeof old);
		SYS(SYS_sigaltstack, NULL, &old);
		if (r == -1)
			res_str(o, errname(e));
		else
			res_hex(o, (uint32_t)old.ss_flags);
	} else if (!strcmp(op, "raise_with_pkru")) {
		/* raise_with_pkru PKRU SIG: WRPKRU(PKRU), tgkill(self, SIG), WRPKRU(old) */
		r = raise_with_pkru((uint32_t)arg(o, 0), arg(o, 1));
		res_int(o, r < 0 ? -1 : r, r < 0 ? (int)-r : 0);
	} else if (!strcmp(op, "raise")) {
		/* tgkill to the calling thread */
		SYS(SYS_tgkill, getpid(), syscall(SYS_gettid), arg(o, 0));
		res_int(o, r, e);
	} else if (!strcmp(op, "thread")) {
		int idx = new_worker(o, 0, self);
		pthread_t th;
		S->workers[idx].pid = getpid();
		if (pthread_create(&th, NULL, thread_main, (void *)(long)idx))
			fail("%s:%d: pthread_create failed", o->file, o->line);
		while (!__atomic_load_n(&S->workers[idx].tid, __ATOMIC_SEQ_CST)) sched_yield();
		res_str(o, "ok");
	} else if (!strcmp(op, "fork")) {
		if (self != 0) fail("%s:%d: only the main thread forks", o->file, o->line);
		int idx = new_worker(o, 1, self);
		fflush(stdout);
		pid_t pid = fork();
		if (pid == 0) {
			S->workers[idx].pid = getpid();
			S->workers[idx].tid = getpid();
			worker_loop(idx);
		}
		S->workers[idx].pid = pid;
		res_str(o, "ok");
	} else if (!strcmp(op, "wait")) {
		/* wait CHILD: how the forked child ended (it must have ended) */
		int idx = find_worker(o, o->tok[0]);
		struct worker *w = &S->workers[idx];
		char buf[48];
		if (!w->dead) {
			int st;
			for (int k = 0; k < 200 && !w->dead; k++) {
				if (waitpid(w->pid, &st, WNOHANG) == w->pid) {
					w->dead = 1;
					w->status = st;
				} else
					usleep(1000);
			}
		}
		if (!w->dead)
			snprintf(buf, sizeof buf, "running");
		else
			end_string(buf, sizeof buf, w->status);
		res_str(o, buf);
	} else if (!strcmp(op, "execve")) {
		if (self != 0) fail("%s:%d: only the main thread execs", o->file, o->line);
		do_exec(i + 1);
	} else if (!strcmp(op, "exit")) {
		syscall(SYS_exit_group, arg(o, 0));
	} else if (!strcmp(op, "debugfs_read")) {
		char buf[64] = {0};
		int fd = open(DEBUGFS_INIT_PKRU, O_RDONLY);
		if (fd < 0) {
			res_str(o, errname(errno));
		} else {
			ssize_t n = read(fd, buf, sizeof buf - 1);
			close(fd);
			if (n < 0) n = 0;
			buf[n] = 0;
			char *nl = strchr(buf, '\n');
			if (nl) *nl = 0;
			res_str(o, buf);
		}
	} else if (!strcmp(op, "debugfs_write")) {
		S->debugfs_touched = 1;
		int fd = open(DEBUGFS_INIT_PKRU, O_WRONLY);
		if (fd < 0) {
			res_str(o, errname(errno));
		} else {
			errno = 0;
			r = write(fd, o->tok[0], strlen(o->tok[0]));
			e = errno;
			close(fd);
			res_int(o, r, e);
		}
	} else if (uring_op(o)) {
		/* io_uring: see uring_op */
	} else {
		fail("%s:%d: unknown operation %s", o->file, o->line, op);
	}
#undef SYS
}

static void run_scenario_from(int start)
{
	for (int i = start; i < cur->nops; i++) {
		const struct op *o = &cur->ops[i];
		if (o->sel[0])
			dispatch(i, find_worker(o, o->sel));
		else
			exec_op(i, 0);
	}
	syscall(SYS_exit_group, 0);
}

/* ---- parsing ---------------------------------------------------------------------- */

static char *slurp(const char *path)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0) return NULL;
	struct stat st;
	fstat(fd, &st);
	char *buf = malloc(st.st_size + 1);
	size_t n = 0;
	ssize_t r;
	while ((r = read(fd, buf + n, st.st_size - n)) > 0) n += r;
	buf[n] = 0;
	close(fd);
	return buf;
}

static void parse_file(const char *path)
{
	char *text = slurp(path);
	if (!text) fail("cannot read %s", path);
	const char *file = strdup(strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
	struct scenario *sc = NULL;
	int lineno = 0;
	char *save = NULL;
	for (char *line = text; line; line = save) {
		lineno++;
		char *nl = strchr(line, '\n');
		save = nl ? nl + 1 : NULL;
		if (nl) *nl = 0;
		char *hash = strchr(line, '#');
		if (hash) *hash = 0;
		char *tok[128];
		int nt = 0;
		for (char *p = strtok(line, " \t\r"); p && nt < 128; p = strtok(NULL, " \t\r"))
			tok[nt++] = p;
		if (!nt) continue;
		if (!strcmp(tok[0], "scenario")) {
			if (nscns >= MAXSCN) fail("too many scenarios");
			sc = &scns[nscns++];
			memset(sc, 0, sizeof *sc);
			snprintf(sc->name, sizeof sc->name, "%s", nt > 1 ? tok[1] : "");
			sc->file = file;
			sc->line = lineno;
			continue;
		}
		if (!sc) fail("%s:%d: expected 'scenario NAME'", file, lineno);
		if (!strcmp(tok[0], "doc") || !strcmp(tok[0], "facts") || !strcmp(tok[0], "rows"))
			continue;
		if (!strcmp(tok[0], "only")) {
			sc->only = nt > 1 && !strcmp(tok[1], "nopku") ? 2 : 1;
			continue;
		}
		if (sc->nops == sc->cap) {
			sc->cap = sc->cap ? 2 * sc->cap : 16;
			sc->ops = realloc(sc->ops, sc->cap * sizeof *sc->ops);
		}
		struct op *o = &sc->ops[sc->nops++];
		memset(o, 0, sizeof *o);
		o->file = file;
		o->line = lineno;
		int t = 0;
		if (tok[t][0] == '@') snprintf(o->sel, sizeof o->sel, "%s", tok[t++] + 1);
		if (t + 1 < nt && !strcmp(tok[t + 1], "=")) {
			snprintf(o->name, sizeof o->name, "%s", tok[t]);
			t += 2;
		}
		if (t >= nt) fail("%s:%d: missing operation", file, lineno);
		if (nt - t - 1 > MAXTOK) fail("%s:%d: too many arguments", file, lineno);
		snprintf(o->opname, sizeof o->opname, "%s", tok[t++]);
		for (; t < nt; t++) o->tok[o->ntok++] = tok[t];
	}
}

static int scn_filter(const struct dirent *d)
{
	size_t n = strlen(d->d_name);
	return n > 4 && !strcmp(d->d_name + n - 4, ".scn");
}

static void parse_all(void)
{
	struct dirent **list;
	int n = scandir(SCN_DIR, &list, scn_filter, alphasort);
	if (n < 0) fail("no %s", SCN_DIR);
	for (int i = 0; i < n; i++) {
		char path[512];
		snprintf(path, sizeof path, "%s/%s", SCN_DIR, list[i]->d_name);
		parse_file(path);
	}
}

static void map_shared(int create)
{
	int fd = open(SHM_PATH, O_RDWR | (create ? O_CREAT | O_TRUNC : 0), 0600);
	if (fd < 0) fail("open %s", SHM_PATH);
	if (create && ftruncate(fd, sizeof(struct shared))) fail("ftruncate");
	S = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (S == MAP_FAILED) fail("mmap shared");
	close(fd);
}

/* ---- the parent: one scenario at a time ---------------------------------------------- */

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void emit(const char *scn, const char *res, const char *val)
{
	printf(MARK "{\"scenario\": ");
	json_str(scn);
	printf(", \"result\": ");
	json_str(res);
	printf(", \"value\": ");
	json_str(val);
	printf("}\n");
}

static void meta(const char *key, const char *val)
{
	printf(MARK "{\"meta\": ");
	json_str(key);
	printf(", \"value\": ");
	json_str(val);
	printf("}\n");
}

static char saved_init_pkru[64];

static void run_one(struct scenario *sc)
{
	map_shared(1);
	memset(S, 0, sizeof *S);
	snprintf(S->workers[0].name, sizeof S->workers[0].name, "main");
	S->nworkers = 1;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		setpgid(0, 0);
		cur = sc;
		S->workers[0].pid = getpid();
		S->workers[0].tid = getpid();
		run_scenario_from(0);
	}
	/* Wait, with a timeout: SIGALRM interrupts waitpid. */
	int st = 0;
	alarm(SCENARIO_TIMEOUT);
	pid_t w = waitpid(pid, &st, 0);
	alarm(0);
	char end[64];
	if (w != pid) {
		kill(-pid, SIGKILL);
		waitpid(pid, &st, 0);
		snprintf(end, sizeof end, "timeout");
	} else {
		end_string(end, sizeof end, st);
	}
	kill(-pid, SIGKILL);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	for (int i = 0; i < S->nres; i++) emit(sc->name, S->res[i].name, S->res[i].val);
	if (S->error[0]) emit(sc->name, "error", S->error);
	emit(sc->name, "end", end);
	fflush(stdout);
	if (S->debugfs_touched && saved_init_pkru[0]) {
		int fd = open(DEBUGFS_INIT_PKRU, O_WRONLY);
		if (fd >= 0) {
			if (write(fd, saved_init_pkru, strlen(saved_init_pkru)) < 0) {}
			close(fd);
		}
	}
	munmap(S, sizeof *S);
	S = NULL;
}

static void on_alarm(int sig) { (void)sig; }

int main(int argc, char **argv)
{
	parse_all();
	if (argc == 4 && !strcmp(argv[1], "--continue")) {
		/* After execve: the same scenario, from the next operation. */
		map_shared(0);
		cur = &scns[atoi(argv[2])];
		for (int i = 1; i < S->nworkers; i++)
			if (S->workers[i].pid == getpid()) S->workers[i].dead = 1;
		run_scenario_from(atoi(argv[3]));
	}
	const char *only = argc >= 2 ? argv[1] : NULL;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	struct utsname u;
	uname(&u);
	int ospke, pku = cpu_has_pku(&ospke);
	meta("uname_r", u.release);
	meta("uname_v", u.version);
	meta("cpu_pku", pku ? "yes" : "no");
	{
		int fd = open(DEBUGFS_INIT_PKRU, O_RDONLY);
		if (fd >= 0) {
			ssize_t n = read(fd, saved_init_pkru, sizeof saved_init_pkru - 1);
			close(fd);
			if (n > 0) saved_init_pkru[n] = 0;
		}
	}
	int count = 0;
	for (int i = 0; i < nscns; i++) {
		if (only && strcmp(only, scns[i].name)) continue;
		if (scns[i].only == 1 && !pku) continue;
		if (scns[i].only == 2 && pku) continue;
		run_one(&scns[i]);
		count++;
	}
	char buf[16];
	snprintf(buf, sizeof buf, "%d", count);
	meta("scenarios", buf);
	meta("done", "yes");
	fflush(stdout);
	return 0;
}
