/*
 * alloc_count.c - an LD_PRELOAD library that counts heap allocations.
 *
 * Every malloc, calloc, realloc and aligned allocation of the process
 * (glibc's own internal ones included: glibc calls these through
 * interposable symbols) adds one to a 64-bit counter.  With
 * PGW_ALLOC_COUNT_FILE set, the counter lives in that file, mapped shared,
 * so a test can read it while the process runs (8 bytes, native order).
 * The allocations themselves are glibc's (__libc_malloc and friends), so
 * free() needs no wrapper.
 *
 * tests/integration/test_alloc.py uses it to check that relaying a
 * transaction allocates nothing once the sessions and servers exist.  Not
 * built with PGW_SANITIZE (the sanitizers replace the allocator).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);

static uint64_t before_init;              /* counted before the file is mapped */
static uint64_t *counter = &before_init;

static void count(void)
{
    __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

__attribute__((constructor)) static void alloc_count_init(void)
{
    const char *path = getenv("PGW_ALLOC_COUNT_FILE");
    if (!path || !*path)
        return;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    if (ftruncate(fd, sizeof(uint64_t)) == 0) {
        void *p = mmap(NULL, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) {
            *(uint64_t *)p = __atomic_load_n(&before_init, __ATOMIC_RELAXED);
            __atomic_store_n(&counter, (uint64_t *)p, __ATOMIC_RELEASE);
        }
    }
    close(fd);
}

void *malloc(size_t size)
{
    count();
    return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
    count();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
    count();
    return __libc_realloc(p, size);
}

void *memalign(size_t align, size_t size)
{
    count();
    return __libc_memalign(align, size);
}

void *aligned_alloc(size_t align, size_t size)
{
    count();
    return __libc_memalign(align, size);
}

int posix_memalign(void **out, size_t align, size_t size)
{
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return EINVAL;
    count();
    void *p = __libc_memalign(align, size);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}
