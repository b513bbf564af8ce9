// jb_service.h: talking to systemd when a stage runs as a service (Type=notify).
//
// READY=1 is sent once the stage has loaded its weights and opened its sockets,
// so `systemctl start` returns when the stage can take work; WATCHDOG=1 is sent
// from the stage's loop at half the unit's WatchdogSec, so a stage stuck in a
// loop is restarted; STATUS= shows in `systemctl status`. Outside systemd
// (no NOTIFY_SOCKET) every call is a no-op.
//
// Thread rules: call from the stage's main thread.
#ifndef JB_SERVICE_H
#define JB_SERVICE_H

void jb_service_ready(const char *status);
// Cheap to call often: pings at most every half watchdog interval.
void jb_service_watchdog(void);
void jb_service_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void jb_service_stopping(void);

// The listening side (a launcher standing in for systemd, a benchmark): 1 when a
// notification (lines "KEY=VALUE") holds the line READY=1, else 0.
int jb_service_is_ready_msg(const char *msg);

#endif
