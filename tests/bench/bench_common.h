/* bench_common.h: what the in-process benchmarks share: the 314-byte DataSyncCompletedEvent
 * used for every figure quoted in the issues, an allocation-counting allocator (installed with
 * sb_set_allocator, so jansson's allocations count too) and a monotonic clock. Header-only:
 * each benchmark is one executable. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stdlib.h>
#include <time.h>

static const char BODY[] = "{\"JobId\":\"3f2c9a1e-7b4d-4e8a-9c61-2d5f8e0b7a13\",\"SourceSystem\":"
                           "\"CRM-Salesforce-EU-West-1\","
                           "\"TargetSystem\":\"DataWarehouse-Snowflake-Analytics-Production\","
                           "\"RecordsProcessed\":1250000,"
                           "\"CompletedAt\":\"2026-12-01T10:00:00.1234567Z\","
                           "\"Id\":\"5b1f0a52-8d3c-4c59-9f7e-0c2a3f1d9e01\","
                           "\"CreationDate\":\"2026-12-01T10:00:00.1234567Z\"}";

static unsigned long long allocs;

static void *count_malloc(size_t n)
{
    allocs++;
    return malloc(n);
}

static void *count_realloc(void *p, size_t n)
{
    if (!p)
        allocs++;
    return realloc(p, n);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static volatile long long sink;

#endif
