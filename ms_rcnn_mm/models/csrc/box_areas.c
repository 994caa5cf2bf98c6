/*
 * Pixels of binary instance masks inside boxes, for the MaskIoU targets
 * (ms_rcnn_mm/models/area_ratio.py holds the idea and the portable path).
 *
 * Each instance is one task on the threads of the OpenMP runtime torch
 * already loaded (the caller passes torch.get_num_threads()). A first pass
 * reads its rows, 32 pixels at a time, for its bounding box. The edges of
 * its boxes, clipped to that box, cut it into a grid; a second pass over the
 * bounding box (just read, so in the CPU's caches) counts the pixels of each
 * grid cell, which makes the grid's summed-area table, and each box reads
 * four of its entries. Instances no box refers to are not read at all.
 *
 * Pixel convention (the caller's): a box is given as the first pixel whose
 * centre it holds and the first one past it, (x1, y1, x2, y2); its pixels
 * are mask[y1:y2, x1:x2] once clipped to the mask. A pixel counts when it is
 * nonzero.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* pixels (bytes) of one 64-bit word */
#define WORD_PIXELS 8

static inline uint64_t load_word(const uint8_t *pixels) {
    uint64_t word;
    memcpy(&word, pixels, sizeof(word));
    return word;
}

static inline int64_t clip(int64_t value, int64_t low, int64_t high) {
    return value < low ? low : (value > high ? high : value);
}

static int compare_int64(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Sorts values[0:n] and drops repeats; returns how many are left. */
static int64_t sort_unique(int64_t *values, int64_t n) {
    qsort(values, n, sizeof(int64_t), compare_int64);
    int64_t kept = 0;
    for (int64_t k = 0; k < n; k++)
        if (kept == 0 || values[k] != values[kept - 1])
            values[kept++] = values[k];
    return kept;
}

/* Index of value in sorted values[0:n] (it is there). */
static int64_t find(const int64_t *values, int64_t n, int64_t value) {
    int64_t low = 0, high = n - 1;
    while (low < high) {
        const int64_t mid = (low + high) / 2;
        if (values[mid] < value) low = mid + 1;
        else high = mid;
    }
    return low;
}

typedef struct {
    int64_t x0, y0, x1, y1; /* the nonzero pixels lie in [y0, y1) x [x0, x1) */
} Bounds;

/* ORs the row's words into any[]: 4 at a time, so that the compiler keeps
 * several vector accumulators; returns the bytes past the last full group. */
static inline int64_t or_words(const uint8_t *row, int64_t w, uint64_t *any) {
    int64_t x = 0;
    for (; x + 4 * WORD_PIXELS <= w; x += 4 * WORD_PIXELS)
        for (int k = 0; k < 4; k++)
            any[k] |= load_word(row + x + k * WORD_PIXELS);
    return x;
}

/* Bounding box of the nonzero pixels of an (h, w) mask (y1 == 0 when there
 * is none): every row is read once, 32 pixels at a time; the occupied ones
 * are ORed into column words, whose set bytes give the columns. */
static int mask_bounds(const uint8_t *mask, int64_t h, int64_t w,
                       Bounds *box) {
    const int64_t groups = w / (4 * WORD_PIXELS);
    /* the 4 words of each group, then room for the < 32 remaining bytes */
    uint64_t *columns = calloc(4 * groups + 4, sizeof(uint64_t));
    if (!columns) return -1;
    uint8_t *tail = (uint8_t *)(columns + 4 * groups);
    *box = (Bounds){0, -1, 0, 0};
    for (int64_t y = 0; y < h; y++) {
        const uint8_t *row = mask + y * w;
        uint64_t any[4] = {0, 0, 0, 0};
        int64_t x = or_words(row, w, any);
        for (; x < w; x++) any[0] |= row[x];
        if (!(any[0] | any[1] | any[2] | any[3])) continue;
        if (box->y0 < 0) box->y0 = y;
        box->y1 = y + 1;
        for (int64_t g = 0; g < groups; g++)
            or_words(row + g * 4 * WORD_PIXELS, 4 * WORD_PIXELS,
                     columns + 4 * g);
        for (x = groups * 4 * WORD_PIXELS; x < w; x++)
            tail[x - groups * 4 * WORD_PIXELS] |= row[x];
    }
    if (box->y0 < 0) {
        box->y0 = 0;
        free(columns);
        return 0;
    }
    /* ORing words ORs their bytes: byte x of the column words is column x */
    const uint8_t *bytes = (const uint8_t *)columns;
    box->x0 = -1;
    for (int64_t x = 0; x < w; x++) {
        if (!bytes[x]) continue;
        if (box->x0 < 0) box->x0 = x;
        box->x1 = x + 1;
    }
    free(columns);
    return 0;
}

static inline int32_t nonzero(const uint8_t *pixels, int64_t n) {
    int32_t count = 0; /* n is at most a row */
    for (int64_t x = 0; x < n; x++) count += pixels[x] != 0;
    return count;
}

/* Areas of one instance, an (h, w) mask: its pixels inside each of its n
 * boxes and all of them.
 *
 * A first pass over the rows finds the instance's bounding box. The boxes'
 * edges, clipped to it, cut it into a grid of at most (2n + 1)^2 cells; a
 * second pass over its rows keeps, per column strip, the pixels of the rows
 * above the current one and, at each row edge, records their running sums
 * over the strips: the summed-area table of the grid, from which each box
 * takes four entries. Returns 0, or -1 when out of memory. */
static int instance_areas(const uint8_t *mask, int64_t h, int64_t w,
                          const int64_t *boxes, int64_t n, int64_t *inside,
                          int64_t *whole) {
    *whole = 0;
    memset(inside, 0, n * sizeof(int64_t));
    if (n == 0) return 0;
    Bounds box;
    if (mask_bounds(mask, h, w, &box)) return -1;
    if (box.y1 == 0) return 0;
    const int64_t edges = 2 * n + 2;
    int64_t *xs = malloc((2 * edges + 4 * n) * sizeof(int64_t));
    if (!xs) return -1;
    int64_t *ys = xs + edges, *corners = ys + edges, nx = 0, ny = 0;
    xs[nx++] = box.x0;
    xs[nx++] = box.x1;
    ys[ny++] = box.y0;
    ys[ny++] = box.y1;
    for (int64_t k = 0; k < n; k++) {
        const int64_t *b = boxes + 4 * k;
        int64_t *c = corners + 4 * k;
        /* the far corner never before the near one */
        c[0] = clip(b[0], box.x0, box.x1);
        c[1] = clip(b[1], box.y0, box.y1);
        c[2] = clip(b[2], c[0], box.x1);
        c[3] = clip(b[3], c[1], box.y1);
        xs[nx++] = c[0];
        xs[nx++] = c[2];
        ys[ny++] = c[1];
        ys[ny++] = c[3];
    }
    nx = sort_unique(xs, nx);
    ny = sort_unique(ys, ny);
    const int64_t strips = nx - 1;
    /* ny x nx entries: the pixels above row ys[i] and left of column xs[j] */
    int64_t *table = malloc((strips + ny * nx) * sizeof(int64_t));
    if (!table) {
        free(xs);
        return -1;
    }
    int64_t *counts = table + ny * nx, edge = 0;
    memset(counts, 0, strips * sizeof(int64_t));
    for (int64_t y = box.y0; edge < ny; y++) {
        for (; edge < ny && ys[edge] == y; edge++) {
            int64_t *entry = table + edge * nx, sum = 0;
            entry[0] = 0;
            for (int64_t j = 0; j < strips; j++)
                entry[j + 1] = sum += counts[j];
        }
        if (y == box.y1) break;
        const uint8_t *row = mask + y * w;
        for (int64_t j = 0; j < strips; j++)
            counts[j] += nonzero(row + xs[j], xs[j + 1] - xs[j]);
    }
    *whole = table[ny * nx - 1];
    for (int64_t k = 0; k < n; k++) {
        const int64_t *c = corners + 4 * k;
        const int64_t *top = table + find(ys, ny, c[1]) * nx;
        const int64_t *bottom = table + find(ys, ny, c[3]) * nx;
        const int64_t left = find(xs, nx, c[0]), right = find(xs, nx, c[2]);
        inside[k] = bottom[right] - bottom[left] - top[right] + top[left];
    }
    free(xs);
    free(table);
    return 0;
}

static int check_size(const Py_buffer *buffer, Py_ssize_t items,
                      Py_ssize_t itemsize, const char *name) {
    if (buffer->len == items * itemsize) return 0;
    PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd", name,
                 buffer->len, items * itemsize);
    return -1;
}

static PyObject *box_areas(PyObject *self, PyObject *args) {
    Py_buffer masks, boxes, starts, inside, whole;
    Py_ssize_t n, h, w;
    int threads;
    if (!PyArg_ParseTuple(args, "y*(nnn)y*y*w*w*i", &masks, &n, &h, &w,
                          &boxes, &starts, &inside, &whole, &threads))
        return NULL;
    (void)self;
    PyObject *result = NULL;
    const int64_t *start = starts.buf;
    const Py_ssize_t m = inside.len / (Py_ssize_t)sizeof(int64_t);
    if (n < 0 || h < 0 || w < 0) {
        PyErr_Format(PyExc_ValueError, "masks of shape (%zd, %zd, %zd)", n,
                     h, w);
        goto done;
    }
    if (check_size(&inside, m, sizeof(int64_t), "inside") ||
        check_size(&masks, n * h * w, 1, "masks") ||
        check_size(&starts, n + 1, sizeof(int64_t), "starts") ||
        check_size(&boxes, 4 * m, sizeof(int64_t), "boxes") ||
        check_size(&whole, n, sizeof(int64_t), "whole"))
        goto done;
    int rising = start[0] == 0 && start[n] == m;
    for (Py_ssize_t i = 0; i < n && rising; i++)
        rising = start[i] <= start[i + 1];
    if (!rising) {
        PyErr_SetString(PyExc_ValueError,
                        "starts must rise from 0 to the number of boxes");
        goto done;
    }
    const uint8_t *mask_data = masks.buf;
    const int64_t *box_data = boxes.buf;
    int64_t *inside_data = inside.buf, *whole_data = whole.buf;
    int failed = 0, team = 1;
    if (threads < 1) threads = 1;
    if (threads > n) threads = n > 0 ? (int)n : 1;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
#ifdef _OPENMP
#pragma omp single
        team = omp_get_num_threads();
#endif
#pragma omp for schedule(dynamic, 1)
        for (Py_ssize_t i = 0; i < n; i++)
            failed |= instance_areas(mask_data + i * h * w, h, w,
                                     box_data + 4 * start[i],
                                     start[i + 1] - start[i],
                                     inside_data + start[i],
                                     whole_data + i) != 0;
    }
    Py_END_ALLOW_THREADS
    result = failed ? PyErr_NoMemory() : PyLong_FromLong(team);
done:
    PyBuffer_Release(&masks);
    PyBuffer_Release(&boxes);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&inside);
    PyBuffer_Release(&whole);
    return result;
}

static PyMethodDef methods[] = {
    {"box_areas", box_areas, METH_VARARGS,
     "box_areas(masks, (n, h, w), boxes, starts, inside, whole, threads)\n\n"
     "Nonzero pixels of instance i (uint8 masks, n x h x w) inside its\n"
     "boxes boxes[starts[i]:starts[i + 1]] (int64 rows x1, y1, x2, y2 of\n"
     "pixel indices) into inside (int64), and all of them into whole[i]\n"
     "(0 for an instance without boxes). Returns the threads used."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_box_areas",
                                    "Compiled kernel of area_ratio.py.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__box_areas(void) { return PyModule_Create(&module); }
