// Formatting: times, days, durations, sentences, and the labels of policies, member
// states and statuses.

// ----- Formatting -----------------------------------------------------------------------

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

export const fmtTime = (ts) => timeFmt.format(new Date(ts));
export const fmtFull = (ts) => fullFmt.format(new Date(ts));
export const dayKey = (ts) => new Date(ts).toDateString();

export function fmtDay(ts) {
  const d = new Date(ts);
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return 'Today';
  const y = new Date(today);
  y.setDate(today.getDate() - 1);
  if (d.toDateString() === y.toDateString()) return 'Yesterday';
  return dayFmt.format(d);
}

/** "your request was accepted" -> "Your request was accepted." */
export function sentence(text) {
  const t = text.trim();
  if (!t) return t;
  return t[0].toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? '' : '.');
}

export function fmtDuration(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

// Plain words, not jargon (issue 15, item 13).
export const POLICY_LABEL = {
  everyone: 'Everyone is a member', open: 'Anyone can join', request: 'Join on request', private: 'Private: members only',
};
export const STATE_LABEL = { member: 'Member', pending: 'Request sent', can_join: 'Not a member', can_request: 'Not a member' };
export const STATUS_LABEL = { online: 'online', away: 'away', busy: 'busy', offline: 'offline', unknown: 'status unknown' };
export const STATUS_ORDER = { online: 0, busy: 1, away: 2, offline: 3 };
