/*
 * DPDK's fast-path functions (rx/tx burst, mbuf alloc/free/append, rte_errno) are
 * static inline in its headers, so there is no symbol for Rust to call. shim.c wraps
 * each one in a real function; src/lib.rs re-exports them under DPDK's own names.
 * Keep this tiny: one line of C per wrapper, no logic of our own.
 */
#ifndef DOCKNET_DPDK_SHIM_H
#define DOCKNET_DPDK_SHIM_H

#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;

uint16_t dn_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
			     uint16_t nb_pkts);
uint16_t dn_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
			     uint16_t nb_pkts);
struct rte_mbuf *dn_rte_pktmbuf_alloc(struct rte_mempool *mp);
void dn_rte_pktmbuf_free(struct rte_mbuf *m);
/* rte_pktmbuf_mtod(m, void *): the first segment's data. */
void *dn_rte_pktmbuf_mtod(struct rte_mbuf *m);
/* m->data_len: bytes in the first segment. */
uint16_t dn_rte_pktmbuf_data_len(const struct rte_mbuf *m);
/* 1 if the packet is one segment (m->nb_segs == 1). */
int dn_rte_pktmbuf_is_contiguous(const struct rte_mbuf *m);
char *dn_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
/* The calling thread's rte_errno (a thread-local behind a macro). */
int dn_rte_errno(void);
/* The first port RTE_ETH_FOREACH_DEV yields, or RTE_MAX_ETHPORTS if there is none. */
uint16_t dn_rte_eth_first_port(void);

#endif
