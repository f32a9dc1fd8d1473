"""Access: API keys (``api_keys``; only the hash of a key is stored) and S3 credentials
(``s3_credentials``; the access key id is the _id, the secret is stored encrypted)."""
from __future__ import annotations

from pymongo.database import Database


class AccessRepository:
    def __init__(self, db: Database):
        self.keys = db["api_keys"]
        self.s3_credentials = db["s3_credentials"]

    def insert_api_key(self, doc: dict) -> None:
        self.keys.insert_one(doc)

    def find_api_key(self, key_hash: str) -> dict | None:
        return self.keys.find_one({"hash": key_hash})

    def get_api_key(self, key_id: str) -> dict | None:
        return self.keys.find_one({"_id": key_id})

    def list_api_keys(self) -> list[dict]:
        return list(self.keys.find({}, {"hash": 0}).sort("created", 1))

    def revoke_api_key(self, key_id: str, at: float) -> bool:
        res = self.keys.update_one({"_id": key_id, "revoked": None}, {"$set": {"revoked": at}})
        return res.modified_count == 1

    def api_keys_exist(self) -> bool:
        return self.keys.find_one({}, {"_id": 1}) is not None  # count_documents costs 3x on nx-27017

    def insert_s3_credential(self, doc: dict) -> None:
        """Raises DuplicateKeyError when the access key id exists."""
        self.s3_credentials.insert_one(doc)

    def find_s3_credential(self, access_key_id: str) -> dict | None:
        return self.s3_credentials.find_one({"_id": access_key_id})

    def list_s3_credentials(self) -> list[dict]:
        return list(self.s3_credentials.find({}, {"nonce": 0, "ciphertext": 0}).sort("created", 1))

    def revoke_s3_credential(self, access_key_id: str, at: float) -> bool:
        res = self.s3_credentials.update_one({"_id": access_key_id, "revoked": None}, {"$set": {"revoked": at}})
        return res.modified_count == 1
