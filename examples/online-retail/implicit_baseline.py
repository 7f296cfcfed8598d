# The `implicit` library on the Online Retail time split that `rapport evaluate recs
# --split-date 2011-09-01` uses: train before 2011-09-01, test after, customers active in
# both, relevant = products bought after the split, already-bought products filtered.
# pip install implicit pandas scipy; python3 examples/online-retail/implicit_baseline.py
import sys, pandas as pd, numpy as np, scipy.sparse as sp, time
from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
from implicit.als import AlternatingLeastSquares
df=pd.read_csv(sys.argv[1] if len(sys.argv) > 1 else 'examples/online-retail/online_retail.csv.gz',encoding='latin1',dtype={'CustomerID':str,'StockCode':str})
df=df[df.CustomerID.notna() & (df.Quantity>0)]
df['t']=pd.to_datetime(df.InvoiceDate)
tr=df[df.t<'2011-09-01']; te=df[df.t>='2011-09-01']
users=sorted(set(tr.CustomerID)&set(te.CustomerID)); items=sorted(set(tr.StockCode))
ui={u:i for i,u in enumerate(sorted(set(tr.CustomerID)))}; ii={s:i for i,s in enumerate(items)}
g=tr.groupby(['CustomerID','StockCode']).size().reset_index(name='n')
M=sp.csr_matrix((g.n.astype(np.float32),( g.CustomerID.map(ui), g.StockCode.map(ii))),shape=(len(ui),len(ii)))
rel={u:set(te[te.CustomerID==u].StockCode) for u in users}
def ev(model,name):
  t=time.time(); model.fit(M, show_progress=False); ft=time.time()-t
  idx=np.array([ui[u] for u in users])
  ids,_=model.recommend(idx, M[idx], N=10, filter_already_liked_items=True)
  p=np.mean([len(set(items[j] for j in ids[k] if j>=0)&rel[u])/10 for k,u in enumerate(users)])
  print(name,'p@10 %.4f'%p,'fit %.2fs'%ft)
print(len(users),'users',len(items),'items')
ev(BM25Recommender(K=100),'bm25')
ev(BM25Recommender(K=30),'bm25 K30')
ev(BM25Recommender(K=60),'bm25 K60')
ev(CosineRecommender(K=100),'cosine')
ev(AlternatingLeastSquares(factors=64,iterations=15,regularization=0.05,random_state=1),'als')
pop=np.asarray((M>0).sum(axis=0)).ravel(); order=np.argsort(-pop)
p=[]
for u in users:
  had=set(M[ui[u]].indices); rec=[items[j] for j in order if j not in had][:10]; p.append(len(set(rec)&rel[u])/10)
print('popular p@10 %.4f'%np.mean(p))
