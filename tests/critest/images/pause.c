/* /pause for the critest pause images: sleeps until SIGTERM or SIGINT (then exits 0),
 * reaping any child it inherits, as the Kubernetes pause container does. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void bye(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
  signal(SIGTERM, bye);
  signal(SIGINT, bye);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
