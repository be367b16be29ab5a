// CPU reference matmul with broadcast batch dimensions and transpose flags, float64.
import { broadcastShapes, broadcastStrides, forEachIndex, type Nd, sumToShape, zerosNd } from './nd.js';

export function matmul(a: Nd, b: Nd, transA = false, transB = false): Nd {
  const ra = a.shape.length;
  const rb = b.shape.length;
  const [M, K] = transA ? [a.shape[ra - 1]!, a.shape[ra - 2]!] : [a.shape[ra - 2]!, a.shape[ra - 1]!];
  const N = transB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const sa = broadcastStrides(a.shape.slice(0, -2), batch);
  const sb = broadcastStrides(b.shape.slice(0, -2), batch);
  const out = zerosNd([...batch, M, N]);
  forEachIndex(batch, (bi, idx) => {
    let ao = 0;
    let bo = 0;
    idx.forEach((v, k) => ((ao += v * sa[k]!), (bo += v * sb[k]!)));
    ao *= M * K;
    bo *= K * N;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let k = 0; k < K; k++) {
          const av = a.data[ao + (transA ? k * M + m : m * K + k)]!;
          const bv = b.data[bo + (transB ? n * K + k : k * N + n)]!;
          acc += av * bv;
        }
        out.data[bi * M * N + m * N + n] = acc;
      }
    }
  });
  return out;
}

export function matmulVjp(a: Nd, b: Nd, g: Nd, transA = false, transB = false): [Nd, Nd] {
  const ga = transA ? matmul(b, g, transB, true) : matmul(g, b, false, !transB);
  const gb = transB ? matmul(g, a, true, transA) : matmul(a, g, !transA, false);
  return [sumToShape(ga, a.shape), sumToShape(gb, b.shape)];
}
