/* /usr/local/bin/nnp of the nonewprivs image (setuid root): prints its effective uid,
 * so a spec sees whether no_new_privs kept the setuid bit from taking effect. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
  printf("Effective uid: %d\n", (int)geteuid());
  return 0;
}
