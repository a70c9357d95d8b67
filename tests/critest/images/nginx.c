/* /usr/sbin/nginx of the critest web-server images: a master process that looks like
 * nginx's where the specs look (process name "nginx", "master process" in its command
 * line, its pid in /var/run/nginx.pid) and serves HTTP through one worker, busybox httpd
 * on the port in /etc/nginx/port (80 when absent) from /usr/share/nginx/html. SIGTERM,
 * SIGINT and SIGQUIT stop the worker and then the master (exit 0). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TITLE "nginx: master process nginx -g daemon off;"

static pid_t worker;

static void stop(int sig) {
  if (worker > 0) kill(worker, SIGTERM);
  (void)sig;
}

int main(int argc, char **argv) {
  (void)argc;
  if (strcmp(argv[0], TITLE) != 0) {
    /* re-exec under the title nginx gives itself; by its own path, so that the
     * process keeps the name nginx (/proc/self/exe would name it "exe") */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
      perror("nginx: readlink /proc/self/exe");
      return 1;
    }
    self[n] = 0;
    char *again[] = {TITLE, NULL};
    execv(self, again);
    perror("nginx: re-exec");
    return 1;
  }
  char port[16] = "80";
  FILE *f = fopen("/etc/nginx/port", "r");
  if (f) {
    if (!fgets(port, sizeof port, f)) strcpy(port, "80");
    port[strcspn(port, "\r\n")] = 0;
    fclose(f);
  }
  f = fopen("/var/run/nginx.pid", "w");
  if (f) {
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
  }
  signal(SIGTERM, stop);
  signal(SIGINT, stop);
  signal(SIGQUIT, stop);
  worker = fork();
  if (worker < 0) {
    perror("nginx: fork");
    return 1;
  }
  if (worker == 0) {
    char *w[] = {"httpd", "-f", "-p", port, "-h", "/usr/share/nginx/html", NULL};
    execv("/bin/httpd", w);
    perror("nginx: worker");
    _exit(1);
  }
  int status = 0;
  for (;;) {
    pid_t p = wait(&status);
    if (p == worker) break;
    if (p < 0) break;
  }
  unlink("/var/run/nginx.pid");
  return 0;
}
