/* cmd_new_handler.c: `switchboard new-handler NAME [--dir DIR]`: writes the skeleton of a
 * handler module into a new folder (NAME, or DIR): NAME.c, test_NAME.c, CMakeLists.txt,
 * README.md and .gitignore, from the templates embedded at build time.
 *
 * NAME must be a C identifier, because it becomes part of C identifiers, a CMake target and
 * a file name; CMake's reserved target names are refused too. The command never overwrites
 * anything: an existing non-empty folder is refused, files are created with O_EXCL, and a
 * failure part-way removes what this run wrote. Templates are plain text with @NAME@ and
 * @SB_VERSION@ placeholders; there is no template language. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "switchboard/alloc.h"
#include "switchboard/version.h"
#include "cmd_new_handler.h"

#define EXIT_OK_       0
#define EXIT_USAGE     64
#define EXIT_CANTCREAT 73
#define NAME_MAX_LEN   64
#define MAX_FILES      16

static void usage(FILE *out)
{
    fprintf(out, "usage: switchboard new-handler NAME [--dir DIR]\n"
                 "  Writes a handler module skeleton into the new folder DIR (default NAME):\n"
                 "  NAME.c, test_NAME.c, CMakeLists.txt, README.md. NAME must be a C identifier.\n"
                 "  Exit status: 0 written, 64 usage or invalid name, 73 DIR exists or cannot be\n"
                 "  written.\n");
}

/* Why NAME is unusable, or NULL when it is fine. */
static const char *name_problem(const char *name)
{
    static const char *const reserved[] = {
        "all",     "clean",          "help",       "install",       "test",
        "package", "package_source", "edit_cache", "rebuild_cache", "list_install_components",
        NULL};
    size_t len = strlen(name);
    if (len == 0)
        return "it is empty";
    if (len > NAME_MAX_LEN)
        return "it is longer than 64 characters";
    if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z') ||
          name[0] == '_'))
        return "it must start with a letter or an underscore";
    for (const char *p = name; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return "it may contain only letters, digits and underscores";
    }
    for (const char *const *r = reserved; *r; r++) {
        if (!strcmp(name, *r))
            return "it is a target name CMake reserves";
    }
    return NULL;
}

/* 1 if dir exists and is empty, 0 if it does not exist, -1 otherwise (errno set; ENOTEMPTY
 * when it has entries, ENOTDIR when it is not a folder). */
static int dir_state(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            empty = 0;
            break;
        }
    }
    closedir(d);
    if (!empty) {
        errno = ENOTEMPTY;
        return -1;
    }
    return 1;
}

/* Replaces every @NAME@ and @SB_VERSION@ in text. Caller frees with sb_free(). NULL on
 * allocation failure. */
static char *substitute(const char *text, const char *name)
{
    static const char *const keys[] = {"@NAME@", "@SB_VERSION@"};
    const char *vals[] = {name, SB_VERSION_STRING};
    size_t cap = strlen(text) + 1, n = 0;
    for (const char *p = text; (p = strchr(p, '@')); p++)
        cap += NAME_MAX_LEN + 16; /* upper bound of what one replacement adds */
    char *out = sb_malloc(cap);
    if (!out)
        return NULL;
    for (const char *p = text; *p;) {
        size_t k = 0;
        while (k < 2 && strncmp(p, keys[k], strlen(keys[k])))
            k++;
        if (k < 2) {
            size_t vl = strlen(vals[k]);
            memcpy(out + n, vals[k], vl);
            n += vl;
            p += strlen(keys[k]);
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return out;
}

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    while (len) {
        ssize_t w = write(fd, text, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
        text += w;
        len -= (size_t)w;
    }
    return close(fd);
}

/* Writes every template into dir. On failure removes the files it wrote. 0 or -1. */
static int write_skeleton(const char *dir, const char *name, char *what, size_t what_size)
{
    char written[MAX_FILES][4096];
    size_t n_written = 0;
    for (const sb__scaffold_file_t *f = sb__scaffold_files; f->name; f++) {
        char *fname = substitute(f->name, name);
        char *text = fname ? substitute(f->text, name) : NULL;
        int ok = 0;
        if (!text) {
            snprintf(what, what_size, "out of memory");
        } else if (n_written >= MAX_FILES ||
                   (size_t)snprintf(written[n_written], sizeof written[0], "%s/%s", dir, fname) >=
                       sizeof written[0]) {
            snprintf(what, what_size, "%s/%s: path too long", dir, fname);
        } else if (write_file(written[n_written], text) != 0) {
            snprintf(what, what_size, "cannot write %s: %s", written[n_written], strerror(errno));
        } else {
            n_written++;
            ok = 1;
        }
        sb_free(fname);
        sb_free(text);
        if (!ok) {
            while (n_written)
                unlink(written[--n_written]);
            return -1;
        }
    }
    return 0;
}

int sb__cmd_new_handler(int argc, char **argv)
{
    const char *name = NULL, *dir = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return EXIT_OK_;
        } else if (!strcmp(a, "--dir") || !strcmp(a, "-d")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "switchboard new-handler: %s needs a folder\n", a);
                return EXIT_USAGE;
            }
            dir = argv[++i];
        } else if (!strncmp(a, "--dir=", 6)) {
            dir = a + 6;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "switchboard new-handler: unknown option %s\n", a);
            usage(stderr);
            return EXIT_USAGE;
        } else if (name) {
            fprintf(stderr, "switchboard new-handler: one NAME only (got %s and %s)\n", name, a);
            return EXIT_USAGE;
        } else {
            name = a;
        }
    }
    if (!name) {
        fprintf(stderr, "switchboard new-handler: no NAME given\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *why = name_problem(name);
    if (why) {
        fprintf(stderr,
                "switchboard new-handler: invalid name \"%s\": %s (a C identifier is "
                "needed, e.g. order_audit)\n",
                name, why);
        return EXIT_USAGE;
    }
    if (!dir)
        dir = name;
    if (!*dir) {
        fprintf(stderr, "switchboard new-handler: --dir is empty\n");
        return EXIT_USAGE;
    }

    int st = dir_state(dir);
    if (st < 0) {
        if (errno == ENOTEMPTY)
            fprintf(stderr,
                    "switchboard new-handler: %s already exists and is not empty; choose "
                    "another folder with --dir\n",
                    dir);
        else
            fprintf(stderr, "switchboard new-handler: %s: %s\n", dir, strerror(errno));
        return EXIT_CANTCREAT;
    }
    int created = 0;
    if (st == 0) {
        if (mkdir(dir, 0755) != 0) {
            fprintf(stderr, "switchboard new-handler: cannot create %s: %s\n", dir,
                    strerror(errno));
            return EXIT_CANTCREAT;
        }
        created = 1;
    }
    char what[4200];
    if (write_skeleton(dir, name, what, sizeof what) != 0) {
        fprintf(stderr, "switchboard new-handler: %s\n", what);
        if (created)
            rmdir(dir);
        return EXIT_CANTCREAT;
    }
    printf("created %s/ with handler module \"%s\":\n", dir, name);
    for (const sb__scaffold_file_t *f = sb__scaffold_files; f->name; f++) {
        char *fname = substitute(f->name, name);
        printf("  %s/%s\n", dir, fname ? fname : f->name);
        sb_free(fname);
    }
    printf("next:\n"
           "  cmake -S %s -B %s/build -DCMAKE_PREFIX_PATH=<switchboard install prefix>\n"
           "  cmake --build %s/build && ctest --test-dir %s/build --output-on-failure\n",
           dir, dir, dir, dir);
    return EXIT_OK_;
}
