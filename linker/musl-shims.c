/* glibc-only symbols that the x86_64-unknown-linux-gnu Rust objects or gcc's libgcc_eh.a
   reference and musl's libc.a does not define. Compiled with musl's headers (musl-gcc) by
   linker/musl-cc and linked into every musl static-PIE; see linker/README.md.

   Only what the link actually asks for is here. Every other glibc-ism is either defined
   by musl under the same name (open64, fstat64, __xpg_strerror_r, __errno_location, ...)
   or referenced weakly by Rust's std and deliberately left undefined (resolving to null
   makes std take its documented fallback, e.g. __cxa_thread_atexit_impl → std's own
   pthread-key TLS destructor list). */

#define _GNU_SOURCE
#include <link.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* _dl_find_object (glibc 2.35): gcc 12's libgcc_eh.a was built against glibc 2.36, so its
   _Unwind_Find_FDE (unwind-dw2-fde-dip.o) calls _dl_find_object unconditionally and, when
   it returns nonzero or dlfo_eh_frame is null, returns "no FDE" -- there is NO fallback to
   dl_iterate_phdr in that object (checked by disassembly: `call _dl_find_object;
   test %eax,%eax; jne <return NULL>`, and the object does not reference dl_iterate_phdr).
   A stub returning -1 would therefore silently turn every backtrace into an empty one, so
   this is a real implementation of glibc's documented contract, for the objects musl's
   dl_iterate_phdr reports (in a static-PIE: just the executable, located via AT_PHDR and
   PT_PHDR):

     "If ADDRESS is found in an object, fill in *RESULT and return 0. Otherwise, return -1."

   The struct is glibc's x86_64 layout (<bits/dl_find_object.h>: DLFO_STRUCT_HAS_EH_DBASE
   and DLFO_STRUCT_HAS_EH_COUNT are 0 on x86_64; DLFO_EH_SEGMENT_TYPE is PT_GNU_EH_FRAME),
   and libgcc reads dlfo_eh_frame at offset 32, which matches. dlfo_eh_frame is the start
   of the PT_GNU_EH_FRAME segment (.eh_frame_hdr), exactly what glibc stores. The one
   difference: dlfo_link_map is null (musl has no link_map for a static program); libgcc
   never reads it and nothing else in these binaries calls _dl_find_object. Like glibc's,
   it takes no lock and allocates nothing (musl's static dl_iterate_phdr only walks the
   auxiliary vector), so it stays async-signal-safe. */

struct dl_find_object {
	unsigned long long dlfo_flags;
	void *dlfo_map_start;
	void *dlfo_map_end;
	void *dlfo_link_map;
	void *dlfo_eh_frame;
	unsigned long long dlfo_reserved[7];
};

_Static_assert(offsetof(struct dl_find_object, dlfo_eh_frame) == 32, "glibc x86_64 layout");
_Static_assert(sizeof(struct dl_find_object) == 96, "glibc x86_64 layout");

struct find_state {
	uintptr_t pc;
	struct dl_find_object *out;
};

static int find_cb(struct dl_phdr_info *info, size_t size, void *data)
{
	struct find_state *st = data;
	uintptr_t lo = UINTPTR_MAX, hi = 0;
	void *eh_frame = NULL;
	int contains = 0;
	(void)size;
	for (size_t i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t start = info->dlpi_addr + ph->p_vaddr;
		if (ph->p_type == PT_LOAD) {
			uintptr_t end = start + ph->p_memsz;
			if (start < lo)
				lo = start;
			if (end > hi)
				hi = end;
			if (st->pc >= start && st->pc < end)
				contains = 1;
		} else if (ph->p_type == PT_GNU_EH_FRAME) {
			eh_frame = (void *)start;
		}
	}
	if (!contains)
		return 0;
	memset(st->out, 0, sizeof *st->out);
	st->out->dlfo_map_start = (void *)lo;
	st->out->dlfo_map_end = (void *)hi;
	st->out->dlfo_eh_frame = eh_frame;
	return 1;
}

int _dl_find_object(void *address, struct dl_find_object *result)
{
	struct find_state st = { (uintptr_t)address, result };
	return dl_iterate_phdr(find_cb, &st) == 1 ? 0 : -1;
}

/* gnu_get_libc_version (glibc): the gnu std's Command::spawn asks for it before using
   posix_spawn (std::sys::os::glibc_version: "Only glibc 2.24+ posix_spawn() supports
   returning ENOENT directly"), in docknetd (`ip` for the TAP). There is no glibc here, so
   the truthful answer is a string that is not a glibc version: std's parser reads
   "major.minor" numbers, gets None, and spawns with fork + exec -- the same path std takes
   on every platform without posix_spawn, and whenever glibc is older than 2.24. The child
   process, exit status, stdio and error reporting (exec errors come back over std's
   CLOEXEC pipe) behave the same; only the spawn mechanism differs. The string is static,
   as glibc's is. */
const char *gnu_get_libc_version(void)
{
	return "musl";
}
