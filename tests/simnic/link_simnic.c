// SPDX-License-Identifier: GPL-2.0
/*
 * link_simnic.so - lets iproute2's `ip` say `ip link add A type simnic peer
 * name B [netns NS]`, exactly as for veth.
 *
 * `ip link add ... type KIND ARGS` hands ARGS to a parser named
 * KIND_link_util, looked up first in $IP_LIB_DIR/link_KIND.so (default
 * /usr/lib/<triplet>/ip) and then in the ip binary itself.  The module
 * takes the peer in veth's format (VETH_INFO_PEER), so this plugin offers
 * ip's own veth parser under the name "simnic": it copies the binary's
 * veth_link_util (its size from the dynamic symbol table) and renames the
 * copy.  The first two members of struct link_util, `next` and `id`, have
 * been those in every iproute2 release.
 *
 * If anything is missing the copy stays zeroed, and ip says "Garbage
 * instead of arguments" instead of creating a half-made device.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <string.h>

struct link_util_head {
	void *next;
	const char *id;
};

__attribute__((aligned(16))) unsigned char simnic_link_util[1024];

__attribute__((constructor)) static void simnic_link_util_init(void)
{
	void *self = dlopen(NULL, RTLD_LAZY | RTLD_NOLOAD);
	const ElfW(Sym) *sym = NULL;
	struct link_util_head *head;
	Dl_info info;
	void *veth;

	if (!self)
		return;
	veth = dlsym(self, "veth_link_util");
	if (!veth || !dladdr1(veth, &info, (void **)&sym, RTLD_DL_SYMENT) || !sym ||
	    sym->st_size < sizeof(*head) || sym->st_size > sizeof(simnic_link_util))
		return;
	memcpy(simnic_link_util, veth, sym->st_size);
	head = (struct link_util_head *)simnic_link_util;
	head->next = NULL;
	head->id = "simnic";
}
