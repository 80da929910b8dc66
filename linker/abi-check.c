/* The ABI the x86_64-unknown-linux-gnu Rust code (std, the libc crate: glibc's
   definitions) and musl's libc.a must agree on, for every libc function the minimal
   binaries import (see linker/README.md, "ABI audit"). linker/abi-check.sh compiles this
   once against glibc's headers (gcc) and once against musl's (musl-gcc) and fails unless
   both print exactly the same lines: type sizes and alignments, member offsets and sizes,
   and constant values. */

#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/if_ether.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Type: size and alignment. */
#define T(t) printf("type %s size %zu align %zu\n", #t, sizeof(t), _Alignof(t))
/* Member: offset and size. */
#define M(t, f) printf("member %s.%s offset %zu size %zu\n", #t, #f, offsetof(t, f), sizeof(((t *)0)->f))
/* Member whose C type differs but which occupies the same bytes: offset and the span up
   to the next member. glibc declares msghdr.msg_iovlen/msg_controllen and cmsghdr.cmsg_len
   as size_t (the kernel's layout); musl as int/socklen_t plus an explicit padding member,
   in the low (little-endian) half. The Rust side writes a size_t; musl's sendmsg and
   recvmsg copy the header and clear the padding before the system call, so values below
   2^31 (iovec counts, control buffer lengths) mean the same on both; the kernel writes the
   whole 8 bytes back, which is what the Rust side reads. */
#define SPAN(t, f, next) printf("span %s.%s offset %zu bytes %zu\n", #t, #f, offsetof(t, f), offsetof(t, next) - offsetof(t, f))
/* Constant value. */
#define C(c) printf("const %s %lld\n", #c, (long long)(c))

/* Left out on purpose, because the header values differ but never cross into libc:
   - MINSIGSTKSZ: glibc 2.34+ makes it sysconf(_SC_MINSIGSTKSZ) under _GNU_SOURCE, musl a
     constant 2048. std sizes its signal stack from getauxval(AT_MINSIGSTKSZ) (checked
     below) and the libc crate's own constant, not from either header.
   - O_LARGEFILE: glibc's header says 0 on x86_64, musl's the kernel's 0100000; on 64-bit
     the kernel sets it on every open file regardless, so both mean the same.
   - CPU_SETSIZE: glibc 1024 (bits), musl 128; cpu_set_t itself is 128 bytes in both
     (checked below), the libc crate's CPU_SET is Rust code on that array, and
     sched_setaffinity gets the byte size from the caller.
   - struct cmsghdr's alignment: 8 in glibc (size_t cmsg_len), 4 in musl (socklen_t plus
     padding); the size and the member offsets are the same. Control buffers are built and
     parsed by Rust code (the libc crate's CMSG_* with glibc's 8-byte CMSG_ALIGN, which is
     also musl's); only std's pidfd passing uses sendmsg/recvmsg, and only for
     Command::create_pidfd (unstable, unused here). musl's 64-bit sendmsg copies at most
     1024 bytes of control data (ENOMEM above that) and clears each header's padding half:
     harmless for one SCM_RIGHTS descriptor. */

int main(void)
{
	/* Scalar types in function signatures. */
	T(char); T(short); T(int); T(long); T(long long); T(void *); T(size_t); T(ssize_t);
	T(off_t); T(ino_t); T(dev_t); T(mode_t); T(nlink_t); T(pid_t); T(uid_t); T(gid_t);
	T(time_t); T(clockid_t); T(socklen_t); T(nfds_t); T(blksize_t); T(blkcnt_t);
	T(sa_family_t); T(sighandler_t); T(idtype_t); T(fsblkcnt_t); T(fsfilcnt_t);

	/* fstat64, stat64, lstat64, fstatat64, fstat (glibc: struct stat64 == struct stat on
	   x86_64; musl 1.2.3 with _GNU_SOURCE: stat64 is a macro for stat). */
	T(struct stat);
	M(struct stat, st_dev); M(struct stat, st_ino); M(struct stat, st_nlink);
	M(struct stat, st_mode); M(struct stat, st_uid); M(struct stat, st_gid);
	M(struct stat, st_rdev); M(struct stat, st_size); M(struct stat, st_blksize);
	M(struct stat, st_blocks); M(struct stat, st_atim); M(struct stat, st_mtim);
	M(struct stat, st_ctim);
	T(struct stat64); M(struct stat64, st_size); M(struct stat64, st_mtim);
	C(S_IFMT); C(S_IFDIR); C(S_IFREG); C(S_IFLNK); C(S_IFIFO); C(S_IFSOCK); C(S_IFCHR); C(S_IFBLK);

	/* readdir64 (musl 1.2.3: alias of readdir), opendir, fdopendir, closedir, dirfd. */
	T(struct dirent); T(struct dirent64);
	M(struct dirent64, d_ino); M(struct dirent64, d_off); M(struct dirent64, d_reclen);
	M(struct dirent64, d_type); M(struct dirent64, d_name);
	C(DT_UNKNOWN); C(DT_FIFO); C(DT_CHR); C(DT_DIR); C(DT_BLK); C(DT_REG); C(DT_LNK); C(DT_SOCK);

	/* clock_gettime, clock_nanosleep. */
	T(struct timespec); M(struct timespec, tv_sec); M(struct timespec, tv_nsec);
	C(CLOCK_REALTIME); C(CLOCK_MONOTONIC); C(CLOCK_BOOTTIME); C(TIMER_ABSTIME);

	/* sigaction, signal, sigaltstack, sigemptyset, sigaddset, pthread_sigmask, sigwait,
	   kill. (musl's sigemptyset writes the first 16 bytes of the 128-byte set and its
	   system calls pass _NSIG/8 = 8 bytes to the kernel, so the rest is never read.) */
	T(sigset_t); T(struct sigaction);
	M(struct sigaction, sa_handler); M(struct sigaction, sa_sigaction);
	M(struct sigaction, sa_mask); M(struct sigaction, sa_flags); M(struct sigaction, sa_restorer);
	T(stack_t); M(stack_t, ss_sp); M(stack_t, ss_flags); M(stack_t, ss_size);
	T(siginfo_t); M(siginfo_t, si_signo); M(siginfo_t, si_errno); M(siginfo_t, si_code);
	M(siginfo_t, si_pid); M(siginfo_t, si_uid); M(siginfo_t, si_status); M(siginfo_t, si_addr);
	C(SA_NOCLDSTOP); C(SA_NOCLDWAIT); C(SA_SIGINFO); C(SA_ONSTACK); C(SA_RESTART);
	C(SA_NODEFER); C(SA_RESETHAND); C(SS_ONSTACK); C(SS_DISABLE);
	C((long)SIG_DFL); C((long)SIG_IGN); C((long)SIG_ERR);
	C(SIG_BLOCK); C(SIG_UNBLOCK); C(SIG_SETMASK);
	C(SIGHUP); C(SIGINT); C(SIGQUIT); C(SIGILL); C(SIGTRAP); C(SIGABRT); C(SIGBUS);
	C(SIGFPE); C(SIGKILL); C(SIGUSR1); C(SIGSEGV); C(SIGUSR2); C(SIGPIPE); C(SIGALRM);
	C(SIGTERM); C(SIGSTKFLT); C(SIGCHLD); C(SIGCONT); C(SIGSTOP); C(SIGTSTP); C(SIGTTIN);
	C(SIGTTOU); C(SIGURG); C(SIGXCPU); C(SIGXFSZ); C(SIGVTALRM); C(SIGPROF); C(SIGWINCH);
	C(SIGIO); C(SIGPWR); C(SIGSYS);

	/* pthread_*: opaque objects, only their size matters (the Rust side allocates them);
	   libgcc_eh's mutex and once flag are static, zero-initialised (glibc's and musl's
	   PTHREAD_MUTEX_INITIALIZER and PTHREAD_ONCE_INIT are all zeros). */
	T(pthread_t); T(pthread_attr_t); T(pthread_mutex_t); T(pthread_once_t); T(pthread_key_t);
	T(pthread_cond_t); T(pthread_mutexattr_t); T(pthread_condattr_t); T(pthread_rwlock_t);
	C(PTHREAD_ONCE_INIT);

	/* sysconf: the _SC_ names std and the libc crate may pass (dn-httpd: _SC_PAGESIZE). */
	C(_SC_ARG_MAX); C(_SC_CHILD_MAX); C(_SC_CLK_TCK); C(_SC_NGROUPS_MAX); C(_SC_OPEN_MAX);
	C(_SC_PAGESIZE); C(_SC_PAGE_SIZE); C(_SC_NPROCESSORS_CONF); C(_SC_NPROCESSORS_ONLN);
	C(_SC_PHYS_PAGES); C(_SC_GETPW_R_SIZE_MAX); C(_SC_GETGR_R_SIZE_MAX);
	C(_SC_THREAD_STACK_MIN); C(_SC_HOST_NAME_MAX); C(_SC_LINE_MAX); C(_SC_IOV_MAX);
	C(_SC_AVPHYS_PAGES); C(_SC_MONOTONIC_CLOCK);

	/* getauxval. */
	C(AT_PHDR); C(AT_PHENT); C(AT_PHNUM); C(AT_PAGESZ); C(AT_BASE); C(AT_ENTRY);
	C(AT_HWCAP); C(AT_HWCAP2); C(AT_RANDOM); C(AT_EXECFN); C(AT_SECURE); C(AT_SYSINFO_EHDR);
	C(AT_MINSIGSTKSZ);

	/* open, open64, openat64, fcntl, dup, dup2, pipe2, lseek64, ftruncate64, *at. */
	C(O_RDONLY); C(O_WRONLY); C(O_RDWR); C(O_CREAT); C(O_EXCL); C(O_NOCTTY); C(O_TRUNC);
	C(O_APPEND); C(O_NONBLOCK); C(O_DSYNC); C(O_SYNC); C(O_DIRECTORY); C(O_NOFOLLOW);
	C(O_CLOEXEC); C(O_PATH); C(O_TMPFILE); C(O_NOATIME);
	C(F_DUPFD); C(F_GETFD); C(F_SETFD); C(F_GETFL); C(F_SETFL); C(F_DUPFD_CLOEXEC);
	C(F_GETLK); C(F_SETLK); C(F_SETLKW); C(FD_CLOEXEC); C(F_OK); C(R_OK); C(W_OK); C(X_OK);
	C(SEEK_SET); C(SEEK_CUR); C(SEEK_END); C(AT_FDCWD); C(AT_SYMLINK_NOFOLLOW);
	C(AT_REMOVEDIR); C(AT_SYMLINK_FOLLOW); C(AT_EMPTY_PATH);

	/* mmap, mmap64, mprotect, munmap (MAP_FAILED is (void *)-1 in both). */
	C(PROT_NONE); C(PROT_READ); C(PROT_WRITE); C(PROT_EXEC); C(MAP_SHARED); C(MAP_PRIVATE);
	C(MAP_FIXED); C(MAP_ANONYMOUS); C(MAP_NORESERVE); C(MAP_POPULATE); C(MAP_STACK);
	C(MAP_GROWSDOWN); C(MAP_HUGETLB); C((long)MAP_FAILED);

	/* poll, writev, getrandom. */
	T(struct pollfd); M(struct pollfd, fd); M(struct pollfd, events); M(struct pollfd, revents);
	/* fcntl(F_OFD_SETLK/GETLK): the attach claim, libos/src/claim.rs */
	T(struct flock); M(struct flock, l_type); M(struct flock, l_whence);
	M(struct flock, l_start); M(struct flock, l_len); M(struct flock, l_pid);
	C(F_OFD_GETLK); C(F_OFD_SETLK); C(F_OFD_SETLKW); C(F_RDLCK); C(F_WRLCK); C(F_UNLCK);
	C(SEEK_SET);
	C(POLLIN); C(POLLPRI); C(POLLOUT); C(POLLERR); C(POLLHUP); C(POLLNVAL); C(POLLRDHUP);
	T(struct iovec); M(struct iovec, iov_base); M(struct iovec, iov_len);
	C(GRND_NONBLOCK); C(GRND_RANDOM);

	/* dl_iterate_phdr (std's backtrace symbolizer, linker/musl-shims.c). */
	T(struct dl_phdr_info); M(struct dl_phdr_info, dlpi_addr); M(struct dl_phdr_info, dlpi_name);
	M(struct dl_phdr_info, dlpi_phdr); M(struct dl_phdr_info, dlpi_phnum);
	M(struct dl_phdr_info, dlpi_adds); M(struct dl_phdr_info, dlpi_subs);
	M(struct dl_phdr_info, dlpi_tls_modid); M(struct dl_phdr_info, dlpi_tls_data);
	C((long)RTLD_DEFAULT);

	/* Sockets: socket, socketpair, bind, connect, listen, accept4, send, sendto, recv,
	   sendmsg, recvmsg, getsockopt, setsockopt, shutdown; if_nametoindex; ioctl. */
	T(struct sockaddr); T(struct sockaddr_storage); T(struct sockaddr_in);
	T(struct sockaddr_in6); T(struct sockaddr_un); T(struct sockaddr_ll);
	M(struct sockaddr_in, sin_port); M(struct sockaddr_in, sin_addr);
	M(struct sockaddr_in6, sin6_addr); M(struct sockaddr_in6, sin6_scope_id);
	M(struct sockaddr_un, sun_path); M(struct sockaddr_ll, sll_protocol);
	M(struct sockaddr_ll, sll_ifindex); M(struct sockaddr_ll, sll_addr);
	T(struct msghdr); M(struct msghdr, msg_name); M(struct msghdr, msg_namelen);
	M(struct msghdr, msg_iov); SPAN(struct msghdr, msg_iovlen, msg_control);
	M(struct msghdr, msg_control); SPAN(struct msghdr, msg_controllen, msg_flags);
	M(struct msghdr, msg_flags);
	printf("size struct cmsghdr %zu\n", sizeof(struct cmsghdr)); SPAN(struct cmsghdr, cmsg_len, cmsg_level);
	M(struct cmsghdr, cmsg_level); M(struct cmsghdr, cmsg_type);
	C(AF_UNIX); C(AF_INET); C(AF_INET6); C(AF_PACKET); C(AF_NETLINK);
	C(SOCK_STREAM); C(SOCK_DGRAM); C(SOCK_RAW); C(SOCK_SEQPACKET); C(SOCK_NONBLOCK);
	C(SOCK_CLOEXEC); C(SOL_SOCKET); C(SOL_PACKET); C(SO_REUSEADDR); C(SO_ERROR);
	C(SO_RCVBUF); C(SO_SNDBUF); C(SO_RCVTIMEO); C(SO_SNDTIMEO); C(SO_PEERCRED);
	C(SCM_RIGHTS); C(SCM_CREDENTIALS); C(MSG_PEEK); C(MSG_DONTWAIT); C(MSG_NOSIGNAL);
	C(MSG_CMSG_CLOEXEC); C(MSG_TRUNC); C(MSG_CTRUNC); C(SHUT_RD); C(SHUT_WR); C(SHUT_RDWR);
	C(IPPROTO_IP); C(IPPROTO_TCP); C(IPPROTO_UDP); C(ETH_P_ALL); C(PACKET_ADD_MEMBERSHIP);
	C(PACKET_MR_PROMISC); C(PACKET_RX_RING); C(PACKET_TX_RING); C(PACKET_VERSION);
	C(PACKET_STATISTICS); C(PACKET_LOSS); C(PACKET_VNET_HDR); C(PACKET_QDISC_BYPASS);
	T(struct packet_mreq);
	T(struct ifreq); M(struct ifreq, ifr_name); M(struct ifreq, ifr_flags);
	M(struct ifreq, ifr_mtu); M(struct ifreq, ifr_hwaddr); C(IFNAMSIZ); C(IFF_UP);
	C(IFF_RUNNING); C(SIOCGIFFLAGS); C(SIOCSIFFLAGS); C(SIOCGIFMTU); C(SIOCSIFMTU);
	C(SIOCGIFHWADDR); C(SIOCGIFINDEX); C(FIONBIO); C(FIOCLEX); C(FIONREAD); C(TIOCGWINSZ);

	/* statfs. */
	T(struct statfs); M(struct statfs, f_type); M(struct statfs, f_bsize);
	M(struct statfs, f_blocks); M(struct statfs, f_bfree); M(struct statfs, f_bavail);
	M(struct statfs, f_files); M(struct statfs, f_ffree); M(struct statfs, f_fsid);
	M(struct statfs, f_namelen); M(struct statfs, f_frsize); M(struct statfs, f_flags);

	/* mount, umount2, setns, chroot, sched_setaffinity. */
	C(MS_RDONLY); C(MS_NOSUID); C(MS_NODEV); C(MS_NOEXEC); C(MS_REMOUNT); C(MS_BIND);
	C(MS_MOVE); C(MS_REC); C(MS_PRIVATE); C(MS_SLAVE); C(MS_SHARED); C(MNT_FORCE);
	C(MNT_DETACH); C(CLONE_NEWNS); C(CLONE_NEWNET); C(CLONE_NEWPID); C(CLONE_NEWUTS);
	C(CLONE_NEWIPC); C(CLONE_NEWUSER); T(cpu_set_t);

	/* fork, execvp, waitpid, waitid, _exit, setsid, setpgid, set*id; posix_spawn*
	   (linked into docknetd, never reached: see gnu_get_libc_version in musl-shims.c). */
	C(WNOHANG); C(WUNTRACED); C(WEXITED); C(WSTOPPED); C(WCONTINUED); C(WNOWAIT);
	C(P_ALL); C(P_PID); C(P_PGID);
	T(posix_spawnattr_t); T(posix_spawn_file_actions_t);
	C(POSIX_SPAWN_RESETIDS); C(POSIX_SPAWN_SETPGROUP); C(POSIX_SPAWN_SETSIGDEF);
	C(POSIX_SPAWN_SETSIGMASK); C(POSIX_SPAWN_SETSCHEDPARAM); C(POSIX_SPAWN_SETSCHEDULER);

	/* Limits. */
	C(PATH_MAX); C(NAME_MAX); C(IOV_MAX);

	/* errno values (__errno_location, __xpg_strerror_r and every call above). */
	C(EPERM); C(ENOENT); C(ESRCH); C(EINTR); C(EIO); C(ENXIO); C(E2BIG); C(ENOEXEC);
	C(EBADF); C(ECHILD); C(EAGAIN); C(EWOULDBLOCK); C(ENOMEM); C(EACCES); C(EFAULT);
	C(EBUSY); C(EEXIST); C(EXDEV); C(ENODEV); C(ENOTDIR); C(EISDIR); C(EINVAL); C(ENFILE);
	C(EMFILE); C(ENOTTY); C(EFBIG); C(ENOSPC); C(ESPIPE); C(EROFS); C(EMLINK); C(EPIPE);
	C(EDOM); C(ERANGE); C(EDEADLK); C(ENAMETOOLONG); C(ENOSYS); C(ENOTEMPTY); C(ELOOP);
	C(ENODATA); C(ETIME); C(EOVERFLOW); C(EILSEQ); C(ENOTSOCK); C(EDESTADDRREQ);
	C(EMSGSIZE); C(EPROTOTYPE); C(ENOPROTOOPT); C(EPROTONOSUPPORT); C(EOPNOTSUPP);
	C(ENOTSUP); C(EAFNOSUPPORT); C(EADDRINUSE); C(EADDRNOTAVAIL); C(ENETDOWN);
	C(ENETUNREACH); C(ECONNABORTED); C(ECONNRESET); C(ENOBUFS); C(EISCONN); C(ENOTCONN);
	C(ETIMEDOUT); C(ECONNREFUSED); C(EHOSTUNREACH); C(EALREADY); C(EINPROGRESS);
	C(ESTALE); C(EDQUOT); C(ECANCELED); C(EOWNERDEAD);
	return 0;
}
