/*
 * pinfs.h: the C API of the pinfs holder client (src/holder/capi.rs, cargo feature `capi`).
 *
 * A holder pins a byte range of a file on a pinfs mount, gets direct (DAX-like) access to
 * its blocks through a mapping, and must give the pin back when the daemon sends a break.
 *
 * Building the static library (from the pinfs checkout; only the client is compiled, no
 * FUSE, no filesystem):
 *
 *     cargo rustc --lib --no-default-features --features capi --crate-type staticlib \
 *         --target-dir target/capi
 *     cc -Wall -Werror -I src/holder holder.c target/capi/debug/libpinfs.a \
 *         -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o holder
 *
 * (the -l list is what `rustc --print native-static-libs` names for a Rust static library;
 * add --release for target/capi/release/libpinfs.a). examples/c/holder.c is a whole holder.
 *
 * Conventions:
 * - Functions that can fail return a negative errno (-ENOENT, -EAGAIN, ...), as the kernel
 *   and liburing do; pinfs_last_error(conn) then says what failed, with the daemon's own
 *   message when the daemon refused. pinfs_connect returns NULL and sets errno.
 * - NULL pointers are checked: a NULL handle is -EINVAL, a NULL output -EFAULT.
 * - A handle is used by one thread at a time (lock around it, as for a FILE *).
 * - An internal error of the library is -EIO with a message; close the handle then.
 *
 * The mapped bytes: all the blocks of a pin are mapped, in file order, as one contiguous
 * run of memory, even when they are fragmented in the image. pinfs_pin gives that run as
 * `addr` and `len`; it starts at `file_offset`, the start of the block holding the first
 * requested byte, so the byte at file offset o is at addr + (o - file_offset). Loads and
 * stores there are the file's bytes (no FUSE round trip); a read through the mount sees a
 * store at once. A read-only pin is mapped PROT_READ. pinfs_pin_piece says where each piece
 * lives in the image and where it begins inside the run.
 */
#ifndef PINFS_H
#define PINFS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A connection to a mount's daemon: one holder. Opaque. */
struct pinfs_conn;

/* pinfs_pin flags. */
#define PINFS_PIN_RO 1          /* read-only: the file needs only be open for reading */
#define PINFS_PIN_UNBREAKABLE 2 /* breakers fail with ETXTBSY instead of breaking */

/* A granted pin. */
struct pinfs_pin {
    uint64_t id;          /* for pinfs_unpin, and to match events */
    uint64_t holder;      /* the connection's holder id */
    uint64_t file_offset; /* file offset of addr (block-aligned) */
    uint64_t len;         /* bytes mapped at addr (whole blocks) */
    void *addr;           /* the pinned bytes, contiguous */
    uint32_t pieces;      /* pieces in the image, for pinfs_pin_piece */
    uint32_t flags;       /* the PINFS_PIN_* flags it was made with */
};

/* One piece of a pin, contiguous in the image. */
struct pinfs_piece {
    uint64_t file_offset;  /* byte offset in the file */
    uint64_t image_offset; /* byte offset in the image */
    uint64_t len;          /* bytes */
    void *addr;            /* where the piece starts in the pin's mapping */
};

/* Event kinds. */
enum pinfs_event_kind {
    PINFS_EVENT_GRANTED = 1,     /* a pin was granted */
    PINFS_EVENT_BREAK = 2,       /* a breaker wants the range back: unpin before the deadline */
    PINFS_EVENT_RELEASED = 3,    /* the holder gave the pin back */
    PINFS_EVENT_REVOKED = 4,     /* the lease was taken away */
    PINFS_EVENT_REFUSED = 5,     /* a breaker failed at the deadline; the lease stays */
    PINFS_EVENT_FENCED = 6,      /* the holder was fenced: its session is over, reconnect */
    PINFS_EVENT_HOLDER_GONE = 7, /* the holder went away; its pins were released */
    PINFS_EVENT_LOST = 8,        /* a watcher fell behind: `lost` events were missed */
};

/* pinfs_event flags. */
#define PINFS_EVENT_HAS_PIN 1      /* `pin` is set */
#define PINFS_EVENT_HAS_DEADLINE 2 /* a break with a deadline: `deadline_ms` is set (a break
                                      without it never expires) */

/* A notification from the daemon. */
struct pinfs_event {
    int32_t kind;         /* enum pinfs_event_kind */
    uint32_t flags;       /* PINFS_EVENT_HAS_* */
    uint64_t holder;      /* the holder concerned */
    uint64_t pin;         /* the pin (with PINFS_EVENT_HAS_PIN), else 0 */
    uint64_t ino;         /* the file's inode number */
    uint64_t offset;      /* byte range start */
    uint64_t len;         /* byte range length */
    uint64_t deadline_ms; /* a break's deadline: milliseconds left at `time` */
    uint64_t time_sec;    /* when it happened: seconds since the epoch */
    uint32_t time_nsec;   /* and nanoseconds */
    uint32_t reserved;    /* zero */
    uint64_t lost;        /* PINFS_EVENT_LOST: how many events were missed */
};

/* Connects to the daemon of the pinfs mount holding path_on_mount (any path on the mount,
 * its mount point included). NULL on failure, with errno set and the message in
 * pinfs_last_error(NULL). */
struct pinfs_conn *pinfs_connect(const char *path_on_mount);

/* Pins len bytes of the file open as fd (for reading and writing; for reading with
 * PINFS_PIN_RO) from offset, maps them and fills *out. fd stays the caller's. 0 or a
 * negative errno: -EAGAIN while the range is being broken, -ETXTBSY, -EPERM for a fenced
 * holder (reconnect), -EBADF, -EINVAL for unknown flags, ... */
int pinfs_pin(struct pinfs_conn *conn, int fd, uint64_t offset, uint64_t len, int flags,
              struct pinfs_pin *out);

/* Fills *out with piece index (0 to pieces - 1) of pin `pin`. 0 or a negative errno
 * (-ENOENT: no such pin on this connection, -ERANGE: no such piece). */
int pinfs_pin_piece(struct pinfs_conn *conn, uint64_t pin, uint32_t index,
                    struct pinfs_piece *out);

/* Gives pin `pin` back. On success its mapping is gone (do not touch addr again); on failure
 * the pin stays mapped until a later pinfs_unpin succeeds or pinfs_close. 0 or a negative
 * errno (-ENOENT: no such pin on this connection). */
int pinfs_unpin(struct pinfs_conn *conn, uint64_t pin);

/* Waits up to timeout_ms milliseconds (negative: forever; 0: only looks) for the next
 * notification. 1 with *out filled, 0 at the timeout, or a negative errno. */
int pinfs_next_event(struct pinfs_conn *conn, int timeout_ms, struct pinfs_event *out);

/* The mount's status as one JSON object (as `pinfs status --json` prints it) in *out; free
 * it with pinfs_free_string. 0 or a negative errno. */
int pinfs_status_json(struct pinfs_conn *conn, char **out);

/* Frees a string from this library; NULL is ignored. */
void pinfs_free_string(char *s);

/* The message of the last failed call on conn ("" if none), valid until the next call on
 * conn; for NULL, that of this thread's last failed pinfs_connect (or call with a NULL
 * handle). Never NULL. */
const char *pinfs_last_error(const struct pinfs_conn *conn);

/* The name of an event kind ("break", "lost", ...; "unknown" otherwise). Static. */
const char *pinfs_event_name(int kind);

/* Ends the connection and frees the handle (always; do not use conn again). The daemon
 * releases every pin of the connection, as when the holder exits; this waits up to
 * timeout_ms milliseconds (negative: 10 s) for it to confirm it let go of them all, then
 * unmaps them. 1: confirmed; 0: not confirmed in time (always with 0); a negative errno if
 * talking to the daemon failed (message in pinfs_last_error(NULL)). NULL is ignored (0). */
int pinfs_close(struct pinfs_conn *conn, int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* PINFS_H */
