// The page's memory across reloads: the bundle's bytes and the adapted state, in IndexedDB (structured clone: typed
// arrays are stored as they are). The state names its bundle's sha256, and a bundle is verified again on restore.
const DB = "mtl-web";
const STORE = "kv";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function transact(mode, work) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request?.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

export const save = (key, value) => transact("readwrite", (store) => store.put(value, key));
export const load = (key) => transact("readonly", (store) => store.get(key));
export const remove = (key) => transact("readwrite", (store) => store.delete(key));
// put every entry and delete every key in ONE transaction: all of it happens, or none
export const replace = (entries, removals = []) => transact("readwrite", (store) => {
  let last = null;
  for (const [key, value] of Object.entries(entries)) last = store.put(value, key);
  for (const key of removals) last = store.delete(key);
  return last;
});
