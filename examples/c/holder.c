/*
 * holder.c: a pin holder in C, on the pinfs C API (src/holder/pinfs.h).
 *
 * It pins LEN bytes of FILE from OFFSET, stores PATTERN (repeated) over them through the
 * mapping, then waits for a break and gives the pin back at once, as a cooperative holder
 * does (an RDMA program would deregister its memory first). Every step is one line on
 * stdout, so a script (or tests/mount/c_holder.rs) can follow it:
 *
 *     pinned pin=P holder=H file_offset=F len=L pieces=N
 *     piece I file_offset=F image_offset=O len=L
 *     stored N bytes at offset O
 *     status {...}                       (the mount's status, one JSON line)
 *     event KIND pin=P offset=O len=L deadline_ms=D
 *     unpinned pin=P
 *     closed: the daemon let go of every pin
 *
 * Exit status: 0 when it unpinned on a break, 2 when no break came within TIMEOUT seconds
 * (default 30), 3 when its lease was revoked or it was fenced first, 1 on an error.
 *
 * Build (from the pinfs checkout):
 *     cargo rustc --lib --no-default-features --features capi --crate-type staticlib \
 *         --target-dir target/capi
 *     cc -Wall -Werror -I src/holder examples/c/holder.c target/capi/debug/libpinfs.a \
 *         -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o holder
 * Run:  ./holder /mnt/p/buf 5000 6000 'from C ' &   truncate -s 0 /mnt/p/buf
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pinfs.h"

static int fail(const char *what, int rc, const struct pinfs_conn *conn)
{
    fprintf(stderr, "holder: %s: %s (%s)\n", what, strerror(-rc), pinfs_last_error(conn));
    return 1;
}

static int number(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno != 0 || end == s || *end != '\0') {
        fprintf(stderr, "holder: '%s' is not a number\n", s);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t offset, len, timeout_s = 30;
    if (argc < 5 || argc > 6 || number(argv[2], &offset) || number(argv[3], &len) ||
        (argc == 6 && number(argv[5], &timeout_s))) {
        fprintf(stderr, "usage: holder FILE OFFSET LEN PATTERN [TIMEOUT_SECONDS]\n");
        return 1;
    }
    const char *path = argv[1], *pattern = argv[4];
    size_t plen = strlen(pattern);
    if (plen == 0) {
        fprintf(stderr, "holder: the pattern is empty\n");
        return 1;
    }
    /* Lines reach a pipe as they are printed. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    int fd = open(path, O_RDWR);
    if (fd < 0) {
        fprintf(stderr, "holder: open %s: %s\n", path, strerror(errno));
        return 1;
    }
    struct pinfs_conn *conn = pinfs_connect(path);
    if (!conn) {
        fprintf(stderr, "holder: %s\n", pinfs_last_error(NULL));
        return 1;
    }

    struct pinfs_pin pin;
    int rc = pinfs_pin(conn, fd, offset, len, 0, &pin);
    if (rc < 0)
        return fail("pin", rc, conn);
    printf("pinned pin=%" PRIu64 " holder=%" PRIu64 " file_offset=%" PRIu64 " len=%" PRIu64
           " pieces=%" PRIu32 "\n",
           pin.id, pin.holder, pin.file_offset, pin.len, pin.pieces);
    for (uint32_t i = 0; i < pin.pieces; i++) {
        struct pinfs_piece piece;
        rc = pinfs_pin_piece(conn, pin.id, i, &piece);
        if (rc < 0)
            return fail("piece", rc, conn);
        printf("piece %" PRIu32 " file_offset=%" PRIu64 " image_offset=%" PRIu64
               " len=%" PRIu64 "\n",
               i, piece.file_offset, piece.image_offset, piece.len);
    }

    /* The requested bytes are inside the mapping, which starts at the block holding the
     * first of them. Stores go straight to the file's blocks. */
    unsigned char *bytes = (unsigned char *)pin.addr + (offset - pin.file_offset);
    for (uint64_t i = 0; i < len; i++)
        bytes[i] = (unsigned char)pattern[i % plen];
    printf("stored %" PRIu64 " bytes at offset %" PRIu64 "\n", len, offset);

    char *status;
    rc = pinfs_status_json(conn, &status);
    if (rc < 0)
        return fail("status", rc, conn);
    for (char *c = status; *c; c++)
        if (*c == '\n')
            *c = ' ';
    printf("status %s\n", status);
    pinfs_free_string(status);

    int code = 2;
    for (;;) {
        struct pinfs_event ev;
        rc = pinfs_next_event(conn, (int)(timeout_s * 1000), &ev);
        if (rc < 0)
            return fail("next event", rc, conn);
        if (rc == 0) {
            printf("no break within %" PRIu64 " s\n", timeout_s);
            break;
        }
        printf("event %s", pinfs_event_name(ev.kind));
        if (ev.flags & PINFS_EVENT_HAS_PIN)
            printf(" pin=%" PRIu64, ev.pin);
        printf(" offset=%" PRIu64 " len=%" PRIu64, ev.offset, ev.len);
        if (ev.kind == PINFS_EVENT_BREAK) {
            if (ev.flags & PINFS_EVENT_HAS_DEADLINE)
                printf(" deadline_ms=%" PRIu64, ev.deadline_ms);
            else
                printf(" deadline_ms=never");
        }
        printf("\n");
        int ours = (ev.flags & PINFS_EVENT_HAS_PIN) && ev.pin == pin.id;
        if (ours && ev.kind == PINFS_EVENT_BREAK) {
            code = 0;
        } else if ((ours && ev.kind == PINFS_EVENT_REVOKED) || ev.kind == PINFS_EVENT_FENCED) {
            /* Too late: the blocks left the file. Unpinning still frees them. */
            code = 3;
        } else {
            continue;
        }
        rc = pinfs_unpin(conn, pin.id);
        if (rc < 0)
            return fail("unpin", rc, conn);
        printf("unpinned pin=%" PRIu64 "\n", pin.id);
        break;
    }

    rc = pinfs_close(conn, 5000);
    if (rc < 0) {
        fprintf(stderr, "holder: close: %s (%s)\n", strerror(-rc), pinfs_last_error(NULL));
        return 1;
    }
    printf(rc == 1 ? "closed: the daemon let go of every pin\n"
                   : "closed: the daemon did not confirm within 5 s\n");
    close(fd);
    return code;
}
