/* pft-xl-progress: LD_PRELOAD shim that lets `xl migrate` print libxc's progress.
 *
 * xl migrate sets XTL_STDIOSTREAM_HIDE_PROGRESS on its stderr logger before the save
 * (tools/xl/xl_migrate.c), so the per-iteration "Frames iteration K: done/total" lines
 * are dropped. This shim interposes the public libxentoollog function that sets the flag
 * and forwards the call without that one bit. It changes no data path and no protocol.
 * See docs/xen-migration.md. Build (controller, Debian 12, glibc >= 2.34):
 *   gcc -shared -fPIC -O2 -Wall -o pft-xl-progress.so pft-xl-progress.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PFT_HIDE_PROGRESS 004u /* XTL_STDIOSTREAM_HIDE_PROGRESS, xentoollog.h */

struct xentoollog_logger_stdiostream;
typedef void adjust_fn(struct xentoollog_logger_stdiostream *, unsigned, unsigned);

void xtl_stdiostream_adjust_flags(struct xentoollog_logger_stdiostream *lg,
                                  unsigned set_flags, unsigned clear_flags)
{
    static adjust_fn *real;
    if (!real)
        real = (adjust_fn *)dlvsym(RTLD_NEXT, "xtl_stdiostream_adjust_flags", "VERS_1.0");
    if (real)
        real(lg, set_flags & ~PFT_HIDE_PROGRESS, clear_flags);
}

/* Keep the shim out of xl's children (ssh, save helper, hotplug scripts); the /bin/sh
 * wrapper /usr/sbin/xl must keep it until it execs the real xl. */
__attribute__((constructor)) static void pft_xl_progress_init(void)
{
    if (strcmp(program_invocation_short_name, "xl") == 0)
        unsetenv("LD_PRELOAD");
}
