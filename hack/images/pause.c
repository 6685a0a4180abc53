/*
 * The pod sandbox ("pause") process of the local real node: it holds the pod's
 * namespaces open, reaps the zombies of the processes that share its PID namespace,
 * and exits cleanly when the runtime stops the sandbox (SIGINT/SIGTERM).
 * No image can be pulled here, so the sandbox image is this program alone,
 * linked statically into a FROM-scratch image by hack/local-cluster.sh.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction stop = {.sa_handler = on_stop};
    struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
        sigaction(SIGCHLD, &child, NULL) < 0) {
        return 1;
    }
    for (;;) {
        pause();
    }
}
