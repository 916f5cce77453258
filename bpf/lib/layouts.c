/* SPDX-License-Identifier: GPL-2.0 */
/* Every structure, enum and constant user space reads, in one object's BTF.
 * Never loaded: faultinj/kernel/layout.py reads this object's BTF to write
 * faultinj/layouts.py (`python -m faultinj.kernel.build layouts --write`), and the
 * build compiles it beside every program and refuses when its BTF and
 * faultinj/layouts.py differ. An enum used only for its constants is not in
 * a program's BTF; a member here puts it there. A layout Python reads is a
 * member of struct fi_layouts, nothing more to write by hand. */
#include "lib/fault.h"
#include "lib/trace.h"

struct fi_layouts {
	struct fi_config config;
	struct fi_event event;
	struct fi_trace_config trace_config;
	struct fi_trace_event trace_event;
	struct fi_trace_count_key trace_count_key;
	struct fi_trace_count trace_count;
	enum fi_cfg_flag cfg_flag;
	enum fi_counter counter;
	enum fi_action action;
	enum fi_journal_size journal_size;
	enum fi_match_field match_field;
	enum fi_threshold threshold;
	enum fi_parse_limit parse_limit;
	enum fi_hop hop;
	enum fi_trace_mode trace_mode;
	enum fi_drop_flag drop_flag;
} fi_layouts;
