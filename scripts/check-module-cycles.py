import re, os, sys, itertools
root=sys.argv[1]
def modpath(f):
    rel=os.path.relpath(f, root)[:-3].split('/')
    if rel[-1] in ('mod','lib'): rel=rel[:-1]
    return rel
files=[os.path.join(d,f) for d,_,fs in os.walk(root) for f in fs if f.endswith('.rs')]
edges={}
def strip_tests(s):
    i=s.find('#[cfg(test)]')
    return s if i<0 else s[:i]
for f in files:
    m=modpath(f); s=strip_tests(open(f).read())
    s='\n'.join(l for l in s.split('\n') if not l.strip().startswith('//'))
    refs=set()
    for r in re.findall(r'crate::([a-z_]+(?:::[a-z_]+)?)', s):
        refs.add(tuple(r.split('::')))
    for r in re.findall(r'super::([a-z_]+)', s):
        parent=m[:-1] if not f.endswith('mod.rs') else m[:-1]
        refs.add(tuple(parent+[r]))
    # uses in `use crate::{a, b}` form
    for grp in re.findall(r'use crate::\{([^}]*)\}', s):
        for r in re.findall(r'\b([a-z_]+)::', grp): refs.add((r,))
    edges[tuple(m)]=refs
mods=set(edges)
def resolve(r):
    # longest existing module prefix
    for k in range(len(r),0,-1):
        if tuple(r[:k]) in mods: return tuple(r[:k])
    return None
G={}
for m,refs in edges.items():
    for r in refs:
        t=resolve(r)
        if t and t!=m and not (len(m)>len(t) and m[:len(t)]==t):  # child->ancestor counted separately
            G.setdefault(m,set()).add(t)
        elif t and len(m)>len(t) and m[:len(t)]==t and t!=m:
            G.setdefault(m,set()).add(t)
# collapse to a level: top-level modules and direct children of finetune etc.
def level(m, depth):
    return m[:depth]
for depth in (1,2):
    H={}
    for a,bs in G.items():
        for b in bs:
            A,Bm=level(a,depth),level(b,depth)
            if A!=Bm and not (depth==2 and (A[:len(Bm)]==Bm or Bm[:len(A)]==A)):
                H.setdefault(A,set()).add(Bm)
    # find cycles (pairs and SCCs)
    idx={};low={};st=[];on=set();res=[];c=[0]
    def sc(v):
        idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
        for w in H.get(v,()):
            if w not in idx: sc(w);low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],idx[w])
        if low[v]==idx[v]:
            comp=[]
            while True:
                w=st.pop();on.discard(w);comp.append(w)
                if w==v:break
            if len(comp)>1: res.append(comp)
    for v in list(H):
        if v not in idx: sc(v)
    print('depth',depth,'cycles:',[[ '::'.join(x) for x in comp] for comp in res])
    if '-v' in sys.argv:
        for comp in res:
            for a in comp:
                print('  ','::'.join(a),'->',['::'.join(b) for b in H[a] if b in comp])
